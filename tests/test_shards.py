"""Splitting a plan: cost-balanced shards, `--shard I/N` for CI matrices, two real processes through
`accelerate launch`, and two "machines" through two real `torchrun --nnodes 2` launches (gloo on the CPU, static
rendezvous on 127.0.0.1): disjoint shares whose frames equal a one-process run, and one of them killed mid-batch.
The one-process reference and the CI shards (one process each, as on a CI machine) run the CLI in this process."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import INPUTS, cli_env, invoke_cli, load_json
from renderer.errors import UsageError
from renderer.plan import make_plan, plan_recipe
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


# Six jobs for the CI shards and launches below: process 1 of 2 gets a costly job first, then two cheap ones, so
# it is still rendering when its first job's sidecar appears.
LAUNCH_RECIPE = RECIPE.replace("seeds: [0, 1]", "seeds: [0, 1, 2]")
# torch's CPU kernels round differently with different thread counts; a launcher uses 1 thread per process, so the
# one-process reference does too (on a GPU the thread count does not matter). conftest runs this process on one
# thread as well.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
PEER_LOST = ("svdrender: process 0: another process of this 2-process render stopped before the end (its machine or "
             "process died); this process's finished jobs are kept. Run the same command again on every machine to "
             "render the rest")


@pytest.fixture(scope="module")
def launch_recipe(tmp_path_factory):
    """The six-job recipe next to copies of the example inputs, shared by this module's shards and launches."""
    folder = tmp_path_factory.mktemp("launch")
    shutil.copytree(INPUTS, folder / "inputs")
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(LAUNCH_RECIPE).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(launch_recipe):
    """Job id -> frames_sha256 of the launch recipe rendered by one process (this one, on one thread)."""
    import torch

    assert torch.get_num_threads() == 1
    cache = launch_recipe.parent / "hf-cache"  # set here too: the per-test hermetic cache is not set up yet
    done = invoke_cli(launch_recipe, "--out", launch_recipe.parent / "one",
                      env={"HF_HOME": str(cache), "HF_HUB_CACHE": str(cache / "hub")})
    assert done.returncode == 0, done.stderr
    return _frames(launch_recipe.parent / "one")[0]


def _rendered(stdout: str, status: str = "ok") -> list[str]:
    """Job ids in a launched process's summary (`[process N] JOB STATUS DETAIL`) with this status."""
    rows = [line.split() for line in stdout.splitlines() if line.startswith("[process") and "/seed-" in line]
    return [row[2] for row in rows if row[3] == status]


def _ids(manifest: dict) -> list[str]:
    return sorted(job["job_id"] for job in manifest["jobs"])


def _frames(folder):
    manifest = load_json(folder / "manifest.json")
    return {j["job_id"]: j["frames_sha256"] for j in manifest["jobs"]}, manifest


def test_ci_shards_merge_by_copying_folders(launch_recipe, reference, tmp_path):
    path = launch_recipe
    one = invoke_cli(path, "--shard", "1/2", "--out", tmp_path / "s1")
    two = invoke_cli(path, "--shard", "2/2", "--out", tmp_path / "s2")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    first, second = _frames(tmp_path / "s1")[0], _frames(tmp_path / "s2")[0]
    assert first and second and not set(first) & set(second)
    merged = tmp_path / "merged"
    for shard in ("s1", "s2"):
        shutil.copytree(tmp_path / shard, merged, dirs_exist_ok=True)
    report = invoke_cli("report", merged)
    assert report.returncode == 0 and "manifest.json: 6 jobs;" in report.stdout
    frames, manifest = _frames(merged)
    assert manifest["counts"] == {"ok": 6}
    assert frames == reference
    bad = invoke_cli(path, "--shard", "2/1")
    assert bad.returncode == 2 and "I must be between 1 and N" in bad.stderr


def test_two_processes_with_accelerate_launch(launch_recipe, reference, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launched = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "renderer",
         str(launch_recipe), "--out", str(tmp_path / "two")], env=cli_env(**ONE_THREAD), capture_output=True,
        text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    out = launched.stdout
    assert "[process 0] 3 ok; manifest:" in out and "[process 1] 3 ok" in out
    frames, manifest = _frames(tmp_path / "two")
    assert manifest["counts"] == {"ok": 6} and manifest["run"]["processes"] == 2
    assert frames == reference
    # Each process rendered a disjoint share: the two summaries name six different jobs.
    assert sorted(_rendered(out)) == sorted(frames)
    rerun = invoke_cli(launch_recipe, "--out", tmp_path / "two")
    assert rerun.stdout.strip().splitlines()[-1].startswith("6 skipped;")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Machine:
    """One "machine" of a two-node launch: `torchrun --nnodes 2 --node_rank N` in a session of its own (so the test
    can kill all of its processes and nothing else), its output in files (no pipe can fill and block it)."""

    def __init__(self, node_rank: int, port: int, recipe: Path, out: Path, logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.node_rank = node_rank
        self.stdout_path, self.stderr_path = logs / f"node{node_rank}.out", logs / f"node{node_rank}.err"
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        # The command of docs/scaling.md, "Several machines", with 127.0.0.1 as the first machine's address.
        command = [torchrun, "--nnodes", "2", "--node_rank", str(node_rank), "--nproc_per_node", "1",
                   "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "renderer", str(recipe),
                   "--out", str(out)]
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(command, cwd=recipe.parent, env=cli_env(**ONE_THREAD), stdout=stdout,
                                            stderr=stderr, start_new_session=True)

    def finish(self, timeout: float = 300) -> subprocess.CompletedProcess:
        """Wait (bounded) for the launch to end; its exit code and output."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"node {self.node_rank} still running after {timeout} s (hung?):\n"
                        f"{self.stderr_path.read_text()[-3000:]}")
        return subprocess.CompletedProcess(self.process.args, returncode, self.stdout_path.read_text(),
                                           self.stderr_path.read_text())

    def kill(self) -> None:
        """SIGKILL every process of this machine, as a power cut would: torchrun's agent, and each worker process
        with its children (torchrun starts every worker in a session of its own)."""
        agent = self.process.pid
        try:
            workers = [int(pid) for pid in Path(f"/proc/{agent}/task/{agent}/children").read_text().split()]
        except OSError:
            workers = []
        for group in (agent, *workers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=60)


@contextlib.contextmanager
def two_machines(recipe: Path, outs: list[Path], logs: Path):
    """Start node 0 and node 1 of a two-node launch; whatever happens in the test, leave no process behind."""
    port = _free_port()
    machines = [Machine(rank, port, recipe, out, logs) for rank, out in enumerate(outs)]
    try:
        yield machines
    finally:
        for machine in machines:
            if machine.process.poll() is None:
                machine.kill()


def test_two_machines_render_one_shared_folder(launch_recipe, reference, tmp_path):
    out = tmp_path / "shared"
    with two_machines(launch_recipe, [out, out], tmp_path / "logs") as machines:
        done = [machine.finish() for machine in machines]
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:] + done[1].stderr[-3000:]
    assert done[0].stdout.splitlines()[-1] == f"[process 0] 3 ok; manifest: {out / 'manifest.json'}"
    assert done[1].stdout.splitlines()[-1] == "[process 1] 3 ok"
    frames, manifest = _frames(out)
    assert _ids(manifest) == sorted(reference) and manifest["counts"] == {"ok": 6}
    assert manifest["run"]["processes"] == 2
    assert frames == reference
    # Every job rendered exactly once, by one of the two machines; one manifest, written by process 0.
    assert sorted(_rendered(done[0].stdout) + _rendered(done[1].stdout)) == sorted(reference)
    assert list(out.rglob("manifest.json")) == [out / "manifest.json"]


def test_two_machines_with_a_folder_each_merge_with_report(launch_recipe, reference, tmp_path):
    outs = [tmp_path / "machine-0", tmp_path / "machine-1"]
    with two_machines(launch_recipe, outs, tmp_path / "logs") as machines:
        done = [machine.finish() for machine in machines]
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:] + done[1].stderr[-3000:]
    merged = tmp_path / "merged"
    for out in outs:
        shutil.copytree(out, merged, dirs_exist_ok=True)
    report = invoke_cli("report", merged)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith(f"{merged / 'manifest.json'}: 6 jobs;")
    frames, manifest = _frames(merged)
    assert _ids(manifest) == sorted(reference) and manifest["counts"] == {"ok": 6}
    assert frames == reference


def _wait_for(path: Path, machine: Machine, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert machine.process.poll() is None, f"node {machine.node_rank} ended before writing {path}"
        assert time.monotonic() < deadline, f"{path} not written after {timeout} s"
        time.sleep(0.02)


def test_a_machine_dying_mid_batch_and_the_rerun(launch_recipe, reference, tmp_path):
    out = tmp_path / "shared"
    plan = plan_recipe(launch_recipe, out=out)
    shares = [[job.id for job in select(plan, Shard(i, 2)).jobs] for i in (1, 2)]
    with two_machines(launch_recipe, [out, out], tmp_path / "logs") as machines:
        # Node 1 dies after its first job's sidecar is written, while it renders its next job.
        _wait_for(select(plan, Shard(2, 2)).jobs[0].sidecar, machines[1])
        machines[1].kill()
        survivor = machines[0].finish()
    # The survivor stops at the next step it shares with the dead process: no hang, no traceback of svdrender's
    # (torchrun then reports the worker's exit code 1 in a traceback of its own), exit 1.
    assert survivor.returncode == 1, survivor.stderr[-3000:]
    assert PEER_LOST in survivor.stderr.splitlines()
    ours, launcher = survivor.stderr.split(PEER_LOST)
    assert "Traceback" not in ours and launcher.count("Traceback") == 1 and "ChildFailedError" in launcher
    # Its manifest holds every finished job: the survivor's whole share, and the dead node's first job.
    frames, manifest = _frames(out)
    kept = set(frames)
    assert set(shares[0]) | {shares[1][0]} <= kept and not set(shares[1]) <= kept
    # The dead node's other jobs are listed as never run, so the run reads as failed.
    assert manifest["counts"] == {"ok": len(kept), "not run": len(reference) - len(kept)}
    assert manifest["run"]["outcome"] == "failed" and frames == {job: reference[job] for job in kept}

    # The same command again on both machines renders only the rest.
    with two_machines(launch_recipe, [out, out], tmp_path / "rerun-logs") as machines:
        done = [machine.finish() for machine in machines]
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:] + done[1].stderr[-3000:]
    assert sorted(_rendered(done[0].stdout) + _rendered(done[1].stdout)) == sorted(set(reference) - kept)
    frames, manifest = _frames(out)
    assert _ids(manifest) == sorted(reference) and manifest["counts"] == {"ok": 6}
    assert frames == reference
