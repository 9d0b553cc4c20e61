"""Property-based: random and mutated recipes thrown at `svdrender validate` and `svdrender plan`.

Whatever the recipe holds, each command exits 0 (valid) or 2 (refused, every problem located), never with a
traceback, and writes nothing: the folder tree around the recipe is the same afterwards. The mutations start from
the shipped recipes (recipes/*.yaml) and delete keys, swap in values of the wrong type, huge or odd numbers, odd
names, NUL characters, deep nesting and hostile globs; a second strategy garbles the YAML text itself.

Seeded and bounded: SVDRENDER_FUZZ_EXAMPLES examples per strategy (300 by default; a third of that for random
documents), each thrown at both commands. The longer run in docs/reliability.md is

    SVDRENDER_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_recipe_fuzz.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import RECIPES
from renderer.cli import main

hypothesis = pytest.importorskip("hypothesis")  # in the test extras; skipped only in a bare environment
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("SVDRENDER_FUZZ_EXAMPLES", "300"))
SHIPPED = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in sorted(RECIPES.glob("*.yaml"))}

ODD_NAMES = ["coffee\n", "manifest.json", "INDEX.HTML", ".svdrender.lock", "a.svdtmp-1", "../x", "a/b", "", ".",
             "Euler", "k_euler", "CON", "x" * 65, "name.", "é", " ", "-", "ok", "OK"]
ODD_NUMBERS = [0, -1, 1, 64, 64.0, 1.0, 0.5, 7.5, True, False, None, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30,
               1e308, -0.0, 1023, 1024, 100000, float("nan"), float("inf"), float("-inf")]
ODD_STRINGS = ["", "\x00", "inputs/coffee\x00.jpg", "/etc", "/etc/passwd", "../../..", "../outside", ".", "~",
               "/**/*.png", "**/*.jpg", "inputs/**/*.jpg", "inputs/*/../../*.jpg", "[", "inputs/[a-", "*",
               "builtin:tiny", "builtin:nope", "foo", "org/name", "./missing-folder", "euler", "eulr", "DDIM",
               "dpmpp_2m_sde_karras", "karras", "ays", "shared/presets.yaml", "fuzz.yaml", "no", "yes", "1e3",
               "\u202e", "a" * 300, "pingpong", "crossfade", "mci", "blend"]
KEYS = ["version", "name", "model", "output", "dir", "formats", "defaults", "presets", "items", "include", "image",
        "glob", "seeds", "start", "count", "scheduler", "sigmas", "scheduler_options", "width", "height",
        "num_frames", "num_inference_steps", "fps", "motion_bucket_id", "noise_aug_strength", "min_guidance_scale",
        "max_guidance_scale", "decode_chunk_size", "fit", "limits", "max_jobs", "allow_inputs_outside",
        "allow_output_outside", "performance", "profile", "timesteps", "loop", "crossfade_frames", "interpolation",
        "output_fps", "unknown_key"]

scalars = st.one_of(st.sampled_from(ODD_NAMES), st.sampled_from(ODD_NUMBERS), st.sampled_from(ODD_STRINGS),
                    st.integers(), st.floats(), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS + ODD_NAMES), inner,
                                                                       max_size=4)), max_leaves=12)


DEEP = "deeply-nested-"  # a placeholder value, replaced in the YAML text by that many levels of nested lists


def paths_of(data, prefix=()):
    """Every path into `data` (mapping keys and list indexes)."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths_of(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from paths_of(value, prefix + (index,))


def get(data, path):
    for part in path:
        data = data[part]
    return data


@st.composite
def mutated_recipes(draw):
    """A shipped recipe with 1-4 mutations, as YAML text."""
    data = draw(st.sampled_from(sorted(SHIPPED)))
    data = yaml.safe_load(yaml.safe_dump(SHIPPED[data]))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        paths = list(paths_of(data))
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["delete", "replace", "replace", "add", "deep", "duplicate"]))
        if not path:
            if kind == "replace":
                data = draw(values)
            continue
        parent, last = get(data, path[:-1]), path[-1]
        if kind == "delete":
            del parent[last]
        elif kind == "replace":
            parent[last] = draw(values)
        elif kind == "deep":
            parent[last] = f"{DEEP}{draw(st.sampled_from([10, 70, 200, 600]))}"
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(yaml.safe_load(yaml.safe_dump(parent[last])))
        elif kind == "add":
            target = get(data, path)
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS + ODD_NAMES))] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
        if isinstance(data, (dict, list)) and not data:
            break
    return as_yaml(data)


def as_yaml(data) -> str:
    """YAML text of `data`, with each DEEP placeholder spelled out as nested lists (kept out of the data, which
    hypothesis prints recursively)."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6)
    return re.sub(DEEP + r"(\d+)", lambda m: "[" * int(m.group(1)) + "1" + "]" * int(m.group(1)), text)


@st.composite
def garbled_text(draw):
    """A shipped recipe's YAML text with characters inserted, deleted or swapped."""
    text = as_yaml(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["\n", ":", "-", "[", "]", "{", "}", "&a", "*a", "!!python/name:os.system",
                                      "\t", "'", '"', "\\0", "  ", "<<: ", "~", "1e999", ".nan", "---\n"]))
        text = text[:at] + piece + text[at + draw(st.integers(0, 3)):]
    return text


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repository holding a copy of the shipped recipes and their inputs; the fuzzed recipe is recipes/fuzz.yaml."""
    root = tmp_path_factory.mktemp("fuzz") / "repo"
    shutil.copytree(RECIPES, root / "recipes")
    (root / ".git").mkdir()  # the repository's root, as a git work tree marks it
    return root


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below `root` (and `root`'s own parent folder) with its size and modification time."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in [*root.parent.iterdir(), *root.rglob("*")]
            if p.name != "fuzz.yaml"}


def check(repo: Path, text: str) -> None:
    path = repo / "recipes" / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    before = tree(repo)
    for command in (["validate"], ["plan"]):
        result = CliRunner().invoke(main, [*command, str(path)])
        assert isinstance(result.exception, SystemExit) or result.exception is None, (
            f"{command[0]} raised {result.exception!r} on:\n{text}")
        assert result.exit_code in (0, 2), f"{command[0]} exited {result.exit_code} on:\n{text}\n{result.output}"
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert result.stderr.splitlines()[-1].endswith("found."), result.output
    assert tree(repo) == before, f"something was written for:\n{text}"


FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(text=mutated_recipes())
def test_mutated_shipped_recipes_exit_0_or_2_and_write_nothing(repo, text):
    check(repo, text)


@FUZZ
@given(text=garbled_text())
def test_garbled_recipe_text_exits_0_or_2_and_writes_nothing(repo, text):
    check(repo, text)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 20))
@given(data=values)
def test_random_documents_exit_0_or_2_and_write_nothing(repo, data):
    check(repo, as_yaml(data))
