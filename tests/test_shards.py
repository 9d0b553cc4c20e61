"""Splitting a plan: cost-balanced shards, `--shard I/N` for CI matrices, and two real processes through
`accelerate launch` (gloo on the CPU) rendering disjoint halves whose frames equal a one-process run."""

import shutil
import sys

import pytest

from conftest import cli_env, load_json, run_cli
from renderer.errors import UsageError
from renderer.plan import make_plan
from renderer.recipe import load_recipe
from renderer.shards import Shard, parse_shard, select, split

# Four jobs of different cost: 8-frame and 4-frame items, two seeds each.
RECIPE = """
version: 1
model: builtin:tiny
output: {dir: out}
defaults: {width: 64, height: 64, num_frames: 4, num_inference_steps: 3, decode_chunk_size: 2, seeds: [0, 1]}
items:
  - {name: long, image: inputs/coffee.jpg, num_frames: 8}
  - {name: short, image: inputs/rocket.jpg}
"""


def test_split_is_balanced_by_cost_deterministic_and_exact(write_recipe):
    plan = make_plan(load_recipe(write_recipe(RECIPE.replace("num_frames: 8}", "num_frames: 8, seeds: [0]}"))))
    parts = split(plan.jobs, 2)
    ids = [j.id for part in parts for j in part]
    assert sorted(ids) == sorted(j.id for j in plan.jobs) and len(ids) == len(set(ids))
    # One 8-frame job balances two 4-frame jobs: equal cost, unequal job counts.
    assert [[j.id for j in part] for part in parts] == [["long/euler/seed-0"],
                                                        ["short/euler/seed-0", "short/euler/seed-1"]]
    assert parts[0][0].cost == parts[1][0].cost + parts[1][1].cost
    assert split(plan.jobs, 2) == parts
    assert select(plan, Shard(2, 2)).jobs == tuple(parts[1])
    assert [len(p) for p in split(plan.jobs, 5)] == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("text, message", [
    ("3/2", "--shard '3/2': I must be between 1 and N (shards are numbered from 1)"),
    ("0/2", "--shard '0/2': I must be between 1 and N (shards are numbered from 1)"),
    ("half", "--shard 'half': expected I/N, e.g. 1/4 (shards are numbered from 1)"),
])
def test_bad_shard_specs(text, message):
    with pytest.raises(UsageError) as info:
        parse_shard(text)
    assert str(info.value) == message


def _frames(folder):
    manifest = load_json(folder / "manifest.json")
    return {j["job_id"]: j["frames_sha256"] for j in manifest["jobs"]}, manifest


def test_ci_shards_merge_by_copying_folders(write_recipe, tmp_path):
    path = write_recipe(RECIPE)
    whole = run_cli(path, "--out", tmp_path / "whole")
    one = run_cli(path, "--shard", "1/2", "--out", tmp_path / "s1")
    two = run_cli(path, "--shard", "2/2", "--out", tmp_path / "s2")
    assert whole.returncode == one.returncode == two.returncode == 0, one.stderr + two.stderr
    first, second = _frames(tmp_path / "s1")[0], _frames(tmp_path / "s2")[0]
    assert first and second and not set(first) & set(second)
    merged = tmp_path / "merged"
    for shard in ("s1", "s2"):
        shutil.copytree(tmp_path / shard, merged, dirs_exist_ok=True)
    report = run_cli("report", merged)
    assert report.returncode == 0 and "manifest.json: 4 jobs;" in report.stdout
    frames, manifest = _frames(merged)
    assert manifest["counts"] == {"ok": 4}
    assert frames == _frames(tmp_path / "whole")[0]
    bad = run_cli(path, "--shard", "2/1")
    assert bad.returncode == 2 and "I must be between 1 and N" in bad.stderr


def test_two_processes_with_accelerate_launch(write_recipe, tmp_path):
    path = write_recipe(RECIPE)
    # torch's CPU kernels round differently with different thread counts; the launcher uses 1 thread per process,
    # so the one-process reference does too (on a GPU the thread count does not matter).
    env = cli_env(OMP_NUM_THREADS="1")
    reference = run_cli(path, "--out", tmp_path / "one", env=env)
    assert reference.returncode == 0, reference.stderr
    accelerate = shutil.which("accelerate", path=str(__import__("pathlib").Path(sys.executable).parent))
    launched = __import__("subprocess").run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "--main_process_port", "29731", "-m", "renderer", str(path), "--out",
         str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    out = launched.stdout
    assert "[process 0] 2 ok; manifest:" in out and "[process 1] 2 ok" in out
    frames, manifest = _frames(tmp_path / "two")
    assert manifest["counts"] == {"ok": 4} and manifest["run"]["processes"] == 2
    assert frames == _frames(tmp_path / "one")[0]
    # Each process rendered a disjoint share: the two summaries name four different jobs.
    rendered = [line.split()[2] for line in out.splitlines() if line.startswith("[process") and " ok " in line
                and "/seed-" in line]
    assert sorted(rendered) == sorted(frames)
    rerun = run_cli(path, "--out", tmp_path / "two", env=env)
    assert rerun.stdout.strip().splitlines()[-1].startswith("4 skipped;")
