"""`--picks picks.json` (and `--preset`) through the command line: exactly the picked jobs are planned, and a bad
picks file or option is refused with exit 2, the file and line, and nothing written. No render is needed for any
of it (tests/test_review_page.py renders picks made in a real browser)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from conftest import INPUTS
from renderer.cli import main
from renderer.picks import MAX_PICKS_BYTES, PICKS_KIND, read_picks

RECIPE = """\
version: 1
name: review
model: builtin:tiny
output: {dir: out}
defaults:
  presets: [a, b]
  seeds: [1, 2, 3]
  width: 64
  height: 64
  num_frames: 4
  num_inference_steps: 2
presets:
  a: {scheduler: euler}
  b: {scheduler: euler, motion_bucket_id: 180}
  final: {scheduler: euler, num_inference_steps: 3}
items:
  - name: coffee
    image: inputs/coffee.jpg
"""


def picks_text(jobs, **fields) -> str:
    doc = {"kind": PICKS_KIND, "version": 1, "recipe": "review", "recipe_path": None, "run_id": None,
           "output_dir": None, "jobs": jobs, **fields}
    return json.dumps(doc, indent=2) + "\n"


@pytest.fixture
def project(tmp_path):
    """A recipe next to the example inputs; picks files go beside it."""
    (tmp_path / "inputs").mkdir()
    shutil.copy(INPUTS / "coffee.jpg", tmp_path / "inputs")
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    return tmp_path


def snapshot(root):
    """Every path under `root` with its size and modification time: what a command must leave as it was."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


def svdrender(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def plan_ids(result) -> list[tuple[str, str]]:
    assert result.exit_code == 0, result.output
    table = result.stdout.split("\nsettings that depend on the model")[0]  # the job table, without the model block
    return [tuple(line.split()[:2]) for line in table.splitlines()[1:]]


def test_plan_with_picks_lists_exactly_the_picked_jobs_or_their_items_and_seeds_under_another_preset(project):
    recipe = project / "recipe.yaml"
    picks = project / "picks.json"
    picks.write_text(picks_text(["coffee/a/seed-1", "coffee/b/seed-3"]))
    assert plan_ids(svdrender("plan", recipe, "--picks", picks)) == [("coffee/a/seed-1", "render"),
                                                                     ("coffee/b/seed-3", "render")]
    assert plan_ids(svdrender("plan", recipe, "--picks", picks, "--preset", "final")) == [
        ("coffee/final/seed-1", "render"), ("coffee/final/seed-3", "render")]
    # FROM=NAME maps one picked preset; a plain NAME takes the rest. Built-in presets need no definition.
    mapped = svdrender("plan", "--json", recipe, "--picks", picks, "--preset", "b=final", "--preset", "ays")
    jobs = {j["id"]: j for j in json.loads(mapped.stdout)["jobs"]}
    assert list(jobs) == ["coffee/ays/seed-1", "coffee/final/seed-3"]
    assert (jobs["coffee/final/seed-3"]["settings"]["num_inference_steps"], jobs["coffee/ays/seed-1"]["scheduler"]) \
        == (3, {"scheduler": "ays", "num_inference_steps": 2})
    # A pick made from such a render (a job the recipe's own plan lacks) is a job of the recipe too.
    picks.write_text(picks_text(["coffee/final/seed-3"]))
    assert plan_ids(svdrender("plan", recipe, "--picks", picks, "--preset", "a")) == [("coffee/a/seed-3", "render")]
    assert not (project / "out").exists()


def test_picks_render_dry_run_prints_the_plan_and_writes_nothing(project):
    picks = project / "picks.json"
    picks.write_text(picks_text(["coffee/b/seed-2"]))
    before = snapshot(project)
    result = svdrender(project / "recipe.yaml", "--picks", picks, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:2] == ["coffee/b/seed-2", "render"]
    assert snapshot(project) == before


# (id, picks file content, the problems svdrender reports, each as "LINE:COL: $.path: message" after the file name)
PATH_LIKE_IDS = ["../../etc/passwd", "/etc/passwd/seed-1", "coffee/a/seed-1/../../x", "coffee\\a\\seed-1",
                 "coffee/a/seed-01", "coffee/.svdrender.lock/seed-1", "coffee/a/seed-1\n"]
BAD = [
    ("not-json", '{"kind": "svdrender.picks", "jobs": [', [
        ":1:38: not JSON: Expecting value; a picks file is JSON, as the contact sheet exports it"]),
    ("not-utf8", b'{"kind": "svdrender.picks", "jobs": ["caf\xe9"]}', [
        ":1:42: is not UTF-8 text; a picks file is JSON"]),
    ("huge", b" " * (MAX_PICKS_BYTES + 1), [
        f": is {MAX_PICKS_BYTES + 1:,} bytes; a picks file is at most {MAX_PICKS_BYTES:,} bytes"]),
    ("a-list", '["coffee/a/seed-1"]', [
        ":1:1: $: not a picks file; export picks from the contact sheet (index.html in the output folder)"]),
    ("a-manifest", '{"kind": "svdrender.run", "jobs": []}', [
        ':1:2: $.kind: not a picks file (its kind is "svdrender.run"); export picks from the contact sheet '
        "(index.html in the output folder)"]),
    ("typo", '{"kind": "svdrender.picks", "version": 1, "recipe": "review",\n "jbos": ["coffee/a/seed-1"]}', [
        ":1:1: $: missing required key 'jobs'",
        ":2:2: $.jbos: unknown key 'jbos'; did you mean 'jobs'?"]),
    ("no-jobs", picks_text([]), [":8:3: $.jobs: no jobs: mark at least one job on the contact sheet, then export"]),
    ("twice", '{"kind": "svdrender.picks", "version": 1, "recipe": "review", "jobs": ["coffee/a/seed-1"],\n'
              ' "jobs": ["coffee/a/seed-2"]}', [":2:2: $.jobs: 'jobs' is given twice; keep one"]),
    ("path-like-ids", picks_text(PATH_LIKE_IDS + ["coffee/a/seed-1", "coffee/a/seed-1"]), [
        f":{9 + i}:5: $.jobs[{i}]: {text!r} is not a job id: item/preset/seed-N, with names of letters, digits, '.', "
        "'_' and '-'" for i, text in enumerate(PATH_LIKE_IDS)] + [
        ":17:5: $.jobs[8]: 'coffee/a/seed-1' is listed twice; keep one"]),
    ("too-many", picks_text([f"coffee/a/seed-{n}" for n in range(10_001)]), [
        ":8:3: $.jobs: lists 10,001 jobs; a picks file lists at most 10,000"]),
    ("huge-seed", picks_text(["coffee/a/seed-9223372036854775808", 5]), [
        ":9:5: $.jobs[0]: 'coffee/a/seed-9223372036854775808' names a seed above the largest seed "
        "9223372036854775807 (2**63 - 1)",
        ":10:5: $.jobs[1]: expected string, got 5"]),
    ("another-recipe", picks_text(["product-coffee/fast/seed-0"], recipe="product_shots",
                                  recipe_path="/elsewhere/product_shots.yaml"), [
        ":4:3: $.recipe: these are picks of recipe 'product_shots' (/elsewhere/product_shots.yaml), not of 'review' "
        "({recipe}); give the recipe they were picked from",
        ":9:5: $.jobs[0]: job 'product-coffee/fast/seed-0' is not a job of recipe.yaml: the recipe has no item "
        "'product-coffee'; did you mean 'coffee'?"]),
    ("not-in-the-recipe", picks_text(["coffee/a/seed-7", "coffee/zz/seed-1", "coffee/a/seed-1"]), [
        ":9:5: $.jobs[0]: job 'coffee/a/seed-7' is not a job of recipe.yaml: item 'coffee' has no seed 7 (its seeds: "
        "1, 2, 3)",
        ":10:5: $.jobs[1]: job 'coffee/zz/seed-1' is not a job of recipe.yaml: the recipe has no preset 'zz'"]),
]


@pytest.mark.parametrize("content, expected", [(c, e) for _, c, e in BAD], ids=[i for i, _, _ in BAD])
def test_a_bad_picks_file_is_refused_with_exit_2_naming_the_file_and_line(project, content, expected):
    picks = project / "picks.json"
    picks.write_bytes(content if isinstance(content, bytes) else content.encode())
    recipe = project / "recipe.yaml"
    before = snapshot(project)
    for command in (["plan"], ["render"]):
        result = svdrender(*command, recipe, "--picks", picks)
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert lines[:-1] == [f"{picks}{line.format(recipe=recipe)}" for line in expected]
        count = f"{len(expected)} problem{'s' if len(expected) > 1 else ''} found"
        assert lines[-1] == count + ("; nothing was rendered." if command == ["render"] else ".")
    assert snapshot(project) == before


def test_picks_that_are_no_file_are_refused_without_waiting(project):
    os.mkfifo(project / "fifo.json")  # reading it would wait for a writer forever
    (project / "folder.json").mkdir()
    before = snapshot(project)
    for name, message in (("fifo.json", "is not a regular file"), ("folder.json", "is a folder, not a picks file"),
                          ("missing.json", "no such file")):
        result = svdrender(project / "recipe.yaml", "--picks", project / name)
        assert (result.exit_code, result.stderr.splitlines()[0]) == (2, f"{project / name}: {message}")
    assert snapshot(project) == before


USAGE = [
    ("preset-without-picks", ["--preset", "final"],
     "--preset renders picked items and seeds with another preset; give the picks with --picks PICKS.json"),
    ("only-and-picks", ["--picks", "{picks}", "--only", "coffee"],
     "--only and --picks both choose the jobs to render; use one of them"),
    ("unknown-preset", ["--picks", "{picks}", "--preset", "fnal"],
     "--preset fnal: 'fnal' is neither a preset of recipe.yaml nor a built-in one; did you mean 'final'? "
     "(`svdrender presets` lists the built-in ones)"),
    ("refused-scheduler", ["--picks", "{picks}", "--preset", "a=DDIM"],
     "--preset a=DDIM: 'DDIM' is wrong for SVD: DDIMScheduler gives SVD's UNet integer timesteps instead of "
     "t = 0.25·ln σ (wrong videos, no error); zero-SNR rescaling and trailing spacing do not change that; use "
     "'euler' instead"),
    ("unmapped-picks", ["--picks", "{picks}", "--preset", "a=final"],
     "--preset: the picks of preset 'b' (such as coffee/b/seed-3) have no preset to render with; add "
     "--preset b=NAME, or a plain --preset NAME for every pick"),
    ("mapping-nothing-picked", ["--picks", "{picks}", "--preset", "c=final", "--preset", "final"],
     "--preset c=final: no picked job has preset 'c' (the picks have a, b)"),
    ("two-plain-presets", ["--picks", "{picks}", "--preset", "final", "--preset", "ays"],
     "--preset final and --preset ays both name the preset for every pick; give one, or FROM=NAME for the picks "
     "of preset FROM"),
    ("preset-that-does-not-fit", ["--picks", "{picks}", "--preset", "fine"],
     "--preset: coffee/fine: 'fine' takes 3 to 50 steps (the range its accuracy is tested over), got 2; "
     "'dpmpp_2m_ays' and 'euler' take any count"),
]


@pytest.mark.parametrize("args, message", [(a, m) for _, a, m in USAGE], ids=[i for i, _, _ in USAGE])
def test_usage_mistakes_with_picks_are_refused_with_exit_2(project, args, message):
    picks = project / "picks.json"
    picks.write_text(picks_text(["coffee/a/seed-1", "coffee/b/seed-3"]))
    before = snapshot(project)
    result = svdrender(project / "recipe.yaml", *[a.format(picks=picks) for a in args])
    assert (result.exit_code, result.stderr) == (2, f"svdrender: {message}\n")
    assert snapshot(project) == before


def test_picks_take_one_recipe_at_a_time(project):
    picks = project / "picks.json"
    picks.write_text(picks_text(["coffee/a/seed-1"]))
    result = svdrender(project / "recipe.yaml", project / "recipe.yaml", "--picks", picks)
    assert (result.exit_code, result.stderr) == (
        2, "svdrender: --picks takes one recipe at a time (the one the jobs were picked from)\n")


def test_a_hand_written_picks_file_with_tabs_and_a_bom_reads_like_an_exported_one(project):
    picks = project / "picks.json"
    picks.write_bytes(b'\xef\xbb\xbf{\n\t"kind": "svdrender.picks",\n\t"version": 1,\n\t"recipe": null,\n'
                      b'\t"jobs": [\n\t\t"coffee/b/seed-2"\n\t]\n}\n')
    read = read_picks(picks)
    assert (read.problems, [(j.id, j.line, j.col) for j in read.jobs]) == ((), [("coffee/b/seed-2", 6, 3)])
    assert plan_ids(svdrender("plan", project / "recipe.yaml", "--picks", picks)) == [("coffee/b/seed-2", "render")]


def test_the_schema_accepts_what_the_contact_sheet_exports_and_refuses_path_like_ids():
    import jsonschema

    from renderer.picks import picks_template, schema

    validator = jsonschema.Draft202012Validator(schema())
    exported = {**picks_template(recipe="review", recipe_path="/r.yaml", run_id="0123456789abcdef",
                                 output_dir="/out"), "jobs": ["coffee/a/seed-1"]}
    assert list(validator.iter_errors(exported)) == []
    # The schema's id pattern guides editors and other tools; the reader's name rule is stricter still. (Python's
    # `$` also matches before a final newline, ECMA-262's, which editors use, does not: the last id is left out.)
    for job_id in PATH_LIKE_IDS[:-1]:
        assert list(validator.iter_errors({**exported, "jobs": [job_id]})), job_id



def test_the_documented_review_workflow_plans_as_documented(tmp_path):
    # recipes/review_seeds.yaml's own command, planned for real and as a smoke run (which shrinks the final presets
    # that --preset brings in too, down to the fewest steps the ladder takes).
    (tmp_path / "inputs").mkdir()
    shutil.copy(INPUTS / "coffee.jpg", tmp_path / "inputs")
    recipe = tmp_path / "review_seeds.yaml"
    recipe.write_text((INPUTS.parent / "review_seeds.yaml").read_text().replace("../renders/", "renders/"))
    picks = tmp_path / "picks.json"
    picks.write_text(picks_text(["coffee/calm/seed-2", "coffee/lively/seed-3"], recipe="review_seeds"))
    options = ["--picks", picks, "--preset", "calm=calm_final", "--preset", "lively=lively_final"]
    for smoke, steps, frames in (([], 10, 25), (["--smoke"], 3, 4)):
        result = svdrender("plan", "--json", recipe, *options, *smoke)
        assert result.exit_code == 0, result.output
        jobs = json.loads(result.stdout)["jobs"]
        assert [(j["id"], j["settings"]["num_inference_steps"], j["settings"]["num_frames"],
                 j["settings"]["motion_bucket_id"]) for j in jobs] == [
            ("coffee/calm_final/seed-2", steps, frames, 90), ("coffee/lively_final/seed-3", steps, frames, 180)]
