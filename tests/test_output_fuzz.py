"""Property-based: damaged, mutated and hostile job sidecars thrown at `svdrender plan`, `svdrender report` and a
real render of the same output folder.

Whatever a sidecar holds (keys deleted, values of the wrong type, garbage bytes, a symlink to /dev/zero, files
pointing elsewhere), each command exits 0, 1 or 2 and never with a traceback, nothing is written outside the
output folder, and no other job's finished video is lost or changed. A render afterwards re-renders only what it
cannot trust and leaves every job ok. Seeded and bounded (SVDRENDER_FUZZ_EXAMPLES sets the examples per test).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import INPUTS, TINY_RECIPE, load_json
from renderer.cli import main

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("SVDRENDER_FUZZ_EXAMPLES", "300"))
RECIPE = TINY_RECIPE.replace("    image: inputs/coffee.jpg", "    image: inputs/coffee.jpg\n    seeds: [0, 1]")
VICTIM = Path("out/coffee/euler/seed-0.json")  # the sidecar each example damages
BYSTANDER = Path("out/coffee/euler/seed-1.mp4")  # a finished video no example may lose

odd = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                st.sampled_from(["/dev/zero", "/etc/passwd", "../seed-1.mp4", "seed-1.mp4", "../../../x", "\x00",
                                 "abc", "", "0" * 64]),
                st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One real render of a 2-job recipe, copied afresh for every example."""
    folder = tmp_path_factory.mktemp("rendered")
    shutil.copytree(INPUTS, folder / "inputs")
    (folder / "recipe.yaml").write_text(RECIPE.lstrip("\n"), encoding="utf-8")
    result = CliRunner().invoke(main, ["render", str(folder / "recipe.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    return folder


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, prefix + (index,))


@st.composite
def damage(draw, sidecar: dict):
    """A function that damages the victim sidecar in one of several ways."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "bytes", "symlink", "empty", "fifo"]))
    if kind == "mutate":
        data = json.loads(json.dumps(sidecar))
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from([p for p in _paths(data) if p]))
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(odd)
        text = json.dumps(data, allow_nan=True)
        return lambda target: target.write_text(text, encoding="utf-8")
    if kind == "bytes":
        blob = draw(st.binary(max_size=200))
        return lambda target: target.write_bytes(blob)
    if kind == "symlink":
        return lambda target: (target.unlink(), target.symlink_to("/dev/zero"))
    if kind == "fifo":
        return lambda target: (target.unlink(), os.mkfifo(target))
    return lambda target: target.write_bytes(b"")


def _run(*args) -> int:
    result = CliRunner().invoke(main, list(map(str, args)))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{args}: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    return result.exit_code


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_plan_and_report_survive_any_sidecar(rendered, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("case")
    shutil.copytree(rendered, folder, dirs_exist_ok=True)
    data.draw(damage(load_json(rendered / VICTIM)))(folder / VICTIM)
    before = _tree(folder)
    bystander = before[str(BYSTANDER)]
    _run("plan", folder / "recipe.yaml")
    _run("report", folder / "out", "--format", "junit")
    after = _tree(folder)
    assert after[str(BYSTANDER)] == bystander
    # Only svdrender's own reports in the output folder may change; nothing appears or changes elsewhere.
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed <= {"out/manifest.json", "out/index.html"}, changed


@settings(max_examples=max(3, EXAMPLES // 60), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_render_after_any_sidecar_damage_ends_with_every_job_ok(rendered, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("render")
    shutil.copytree(rendered, folder, dirs_exist_ok=True)
    data.draw(damage(load_json(rendered / VICTIM)))(folder / VICTIM)
    bystander = _tree(folder)[str(BYSTANDER)]
    assert _run("render", folder / "recipe.yaml", "-q") == 0
    manifest = load_json(folder / "out" / "manifest.json")
    assert manifest["counts"] == {"ok": 2}
    assert _tree(folder)[str(BYSTANDER)] == bystander
    assert load_json(folder / VICTIM)["status"] == "ok"
