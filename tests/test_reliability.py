"""Reliability of long batches: skip decisions and their reasons, SIGKILL at any moment, SIGINT/SIGTERM/SIGHUP,
one writer per output folder, per-job failures (OOM, black frames, encoder, changed or undecodable images), and
writes that never leave the output folder.

Signal and lock tests drive the real CLI in subprocesses and time their signals by its progress lines ("[i/N] job
status" on stderr) and by the temporaries it writes; the reruns and reports that follow them, and the failure tests,
run in this process: the CLI through invoke_cli, or `run_plan` on the real tiny engine, or on a stand-in engine where
the test is about what happens around rendering."""

import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, TINY_RECIPE, cli_env, invoke_cli, load_json, run_cli
from renderer.batch import run_plan
from renderer.layout import LOCK_NAME, TMP_MARKER
from renderer.plan import make_plan, model_revision, with_cache_key
from renderer.recipe import ModelSpec, load_recipe
from renderer.records import ModelRecord, SchedulerUsed


def tiny(seeds, extra_items="") -> str:
    """TINY_RECIPE rendering coffee with `seeds`, plus more items."""
    return TINY_RECIPE.replace("image: inputs/coffee.jpg", f"image: inputs/coffee.jpg\n    seeds: {list(seeds)}") \
        + extra_items


def temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{TMP_MARKER}*"))


def lock_is_free(out: Path) -> bool:
    if not (out / LOCK_NAME).exists():
        return True
    with open(out / LOCK_NAME, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def frame_count(video: Path) -> int:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is missing: install Debian's ffmpeg package (tests/run does)"
    out = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(video)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


class LiveRun:
    """`svdrender ARGS` in a subprocess whose progress lines can be awaited, so a test can signal it on cue."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "renderer", *map(str, args)], cwd=REPO, env=cli_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = 300) -> None:
        """Block until `count` stderr lines have matched `pattern`."""
        deadline = time.monotonic() + timeout
        while sum(bool(re.search(pattern, line)) for line in self.lines) < count:
            line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, f"exited before {count}x {pattern!r}:\n" + "\n".join(self.lines)
            self.lines.append(line)

    def wait_until(self, condition, timeout: float = 300) -> None:
        """Poll `condition()` every millisecond or so (to catch a temporary that lives ~0.1 s)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, "exited before the awaited moment:\n" + self.finish()[1]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.001)

    def finish(self, timeout: float = 120) -> tuple[str, str]:
        stdout = self.proc.stdout.read()
        self.proc.wait(timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return stdout, "\n".join(self.lines)


def test_sigkill_at_any_moment_then_a_rerun_renders_each_job_exactly_once(write_recipe, tmp_path):
    path = write_recipe(tiny(range(4)))
    out = tmp_path / "out"
    sidecars = {seed: out / "coffee" / "euler" / f"seed-{seed}.json" for seed in range(4)}
    finished: dict[int, bytes] = {}  # sidecar bytes of every job finished so far: they must never change

    def after_kill():
        for seed, sidecar in sidecars.items():
            if seed not in finished and sidecar.exists():
                assert load_json(sidecar)["status"] == "ok"
                finished[seed] = sidecar.read_bytes()
        for video in out.rglob("seed-*.mp4"):  # nothing incomplete under a final name
            assert frame_count(video) == 4, video

    # 1: killed while its first output is being written; 0 jobs finished.
    run = LiveRun(path)
    run.wait_until(lambda: any(p.name.startswith(".seed-0.mp4") for p in temporaries(out)))
    run.proc.kill()
    run.finish()
    assert temporaries(out), "a killed run leaves its temporary behind..."
    after_kill()
    assert finished == {}
    # 2: killed right after its first job finished (the second has just started); the lock of run 1 did not block.
    run = LiveRun(path)
    run.wait_for_line(r"^\[\d/4\] coffee/euler/seed-\d ok")
    assert temporaries(out) == [], "...which the next run sweeps before it writes"
    run.proc.kill()
    run.finish()
    after_kill()
    assert sorted(finished) == [0]
    # 3: killed right after its second job finished.
    run = LiveRun(path)
    run.wait_for_line(r"^\[\d/4\] coffee/euler/seed-\d ok", count=2)
    run.proc.kill()
    run.finish()
    after_kill()
    assert sorted(finished) == [0, 1, 2]
    # 4: completes, rendering only what no run finished.
    rerun = invoke_cli(path)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip().splitlines()[-1].startswith("1 ok, 3 skipped;")
    assert {seed: sidecars[seed].read_bytes() for seed in finished} == finished
    assert load_json(out / "manifest.json")["counts"] == {"ok": 4}
    assert temporaries(out) == []
    after_kill()


def slow(recipe: str) -> str:
    """A recipe whose jobs take long enough (40 steps) that a signal sent when one job's line appears lands inside the
    next job: that job renders while the one before it is encoded, and with 3 steps it could finish first."""
    return recipe.replace("num_inference_steps: 3", "num_inference_steps: 40")


def test_sigterm_stops_the_job_records_it_interrupted_and_exits_143(write_recipe, tmp_path):
    path = write_recipe(slow(tiny([0, 1])))
    out = tmp_path / "out"
    run = LiveRun(path)
    run.wait_for_line(r"^\[1/2\] coffee/euler/seed-0 ok")
    run.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    stdout, stderr = run.finish()
    assert run.proc.returncode == 143, stderr
    assert time.monotonic() - signalled < 15  # "a few seconds" on a busy 2-core CI runner
    assert "[2/2] coffee/euler/seed-1 interrupted (interrupted by SIGTERM)" in stderr
    assert "Traceback" not in stderr
    sidecar = load_json(out / "coffee" / "euler" / "seed-1.json")
    assert (sidecar["status"], sidecar["error"]) == ("interrupted", "interrupted by SIGTERM")
    assert not (out / "coffee" / "euler" / "seed-1.mp4").exists()
    assert temporaries(out) == []
    assert lock_is_free(out)
    assert load_json(out / "manifest.json")["counts"] == {"interrupted": 1, "ok": 1}
    plan = invoke_cli("plan", path).stdout
    assert re.search(r"coffee/euler/seed-0 +skip .*\(done: same settings, files intact\)", plan)
    assert re.search(r"coffee/euler/seed-1 +render .*\(previous run was interrupted\)", plan)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGHUP, 129)], ids=["SIGINT", "SIGHUP"])
def test_sigint_and_sighup_while_starting_exit_cleanly(write_recipe, tmp_path, sig, code):
    path = write_recipe(tiny([0]))
    out = tmp_path / "out"
    run = LiveRun(path)
    # The lock holds the pid once the run owns the folder; it is then importing torch or loading the model.
    run.wait_until(lambda: (out / LOCK_NAME).exists() and (out / LOCK_NAME).read_text().strip())
    run.proc.send_signal(sig)
    _, stderr = run.finish()
    assert run.proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert temporaries(out) == []
    assert lock_is_free(out)


def test_a_second_run_on_the_same_folder_fails_at_once(write_recipe, tmp_path):
    path = write_recipe(tiny([0]))
    out = tmp_path / "out"
    first = LiveRun(path)
    first.wait_until(lambda: (out / LOCK_NAME).exists() and (out / LOCK_NAME).read_text().strip())
    second = run_cli(path)
    assert first.proc.poll() is None, "the first run must still hold the lock for this test to mean anything"
    assert second.returncode == 2
    assert second.stderr.strip() == (f"svdrender: {out}: another svdrender run (pid {first.proc.pid}) is writing "
                                     "here; wait for it or use --out to render elsewhere")
    _, stderr = first.finish()
    assert first.proc.returncode == 0, stderr
    assert load_json(out / "manifest.json")["counts"] == {"ok": 1}


# ---- in-process: failures of one job, and what the plan decides ----

def stand_in_model(model_id: str, resolved_revision: str) -> ModelRecord:
    """What Engine.info holds after a load, for sidecars."""
    return ModelRecord(model_id, "main", "hub", resolved_revision)


class StandInEngine:
    """An engine that 'renders' grey frames (or what `frames_for` returns) without torch: for tests about what
    happens around rendering."""

    pipe = "loaded"
    loads = 1
    performance = None

    def __init__(self, frames_for=None, info=None):
        self.frames_for = frames_for or (lambda job: np.full((4, 64, 64, 3), 100 + job.seed, np.uint8))
        self.info = info

    def load(self):
        return self.info

    def prefetch(self, job):
        pass

    def render(self, job, on_step=None):
        return SimpleNamespace(frames=self.frames_for(job), scheduler=SchedulerUsed("StandIn", {}, (), {}), timings={},
                               fallback=[],
                               segments=())


def render_in_process(path: Path, engine=None, **kwargs):
    return run_plan(make_plan(load_recipe(path), **kwargs), engine=engine or StandInEngine(), quiet=True)


def test_sidecars_record_the_sha256_of_the_frames_each_job_rendered(write_recipe, tmp_path):
    # The writer hashes the frames while ffmpeg encodes them; the record must still be that job's frames.
    rng = np.random.default_rng(0)
    frames = {seed: rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for seed in (1, 2, 3)}
    run = render_in_process(write_recipe(tiny(frames)), StandInEngine(frames_for=lambda job: frames[job.seed]))
    assert run.exit_code == 0
    for seed, f in frames.items():
        record = load_json(tmp_path / "out" / "coffee" / "euler" / f"seed-{seed}.json")
        assert record["frames_sha256"] == hashlib.sha256(f.tobytes()).hexdigest()


def test_plan_says_why_each_job_renders(write_recipe, tmp_path):
    rocket = "  - name: rocket\n    image: inputs/rocket.jpg\n"
    path = write_recipe(tiny(range(6), rocket))
    assert render_in_process(path).exit_code == 0
    folder = tmp_path / "out" / "coffee" / "euler"
    (folder / "seed-1.mp4").unlink()
    (folder / "seed-2.mp4").write_bytes(b"damaged")
    for seed, status in ((3, "failed"), (4, "interrupted")):
        record = load_json(folder / f"seed-{seed}.json")
        (folder / f"seed-{seed}.json").write_text(json.dumps({**record, "status": status}))
    (folder / "seed-5.json").write_text("{truncated")
    write_recipe(tiny(range(7), rocket + "    motion_bucket_id: 100\n"))
    plan = invoke_cli("plan", path)
    assert plan.returncode == 0, plan.stderr
    reasons = dict(re.findall(r"^(\S+) +(?:skip|render) .*\((.*)\)$", plan.stdout, re.MULTILINE))
    assert reasons == {
        "coffee/euler/seed-0": "done: same settings, files intact",
        "coffee/euler/seed-1": "output missing: seed-1.mp4",
        "coffee/euler/seed-2": "output corrupt: seed-2.mp4",
        "coffee/euler/seed-3": "previous run failed",
        "coffee/euler/seed-4": "previous run was interrupted",
        "coffee/euler/seed-5": "sidecar corrupt: not JSON",
        "coffee/euler/seed-6": "new",
        "rocket/euler/seed-0": "changed: motion_bucket_id",
    }
    forced = invoke_cli("plan", path, "--force", "--only", "coffee/euler/seed-0").stdout
    assert re.search(r"^coffee/euler/seed-0 +render .*\(forced \(--force\)\)$", forced, re.MULTILINE)
    assert "recipe: 1 job (1 to render)" in forced  # --only narrows the plan to the named job


def test_cache_key_follows_the_resolved_model_revision(write_recipe, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--acme--svd"

    def cache_commit(commit: str) -> None:
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    path = write_recipe(tiny([0]).replace("model: builtin:tiny", "model: acme/svd"))
    uncached = make_plan(load_recipe(path))
    assert uncached.model_revision is None
    # A first run downloads the model; its sidecar is keyed by the commit the load resolved, as later plans are.
    commit_a, commit_b = "a" * 40, "b" * 40
    run = run_plan(uncached, engine=StandInEngine(info=stand_in_model("acme/svd", commit_a)), quiet=True)
    assert run.exit_code == 0
    cache_commit(commit_a)
    planned = make_plan(load_recipe(path))
    assert planned.model_revision == commit_a
    assert planned.jobs[0].skip_reason == "done: same settings, files intact"
    cache_commit(commit_b)  # `main` moved on: the same recipe now means other weights
    assert make_plan(load_recipe(path)).jobs[0].render_reason == "changed: model"

    local = tmp_path / "my-svd"
    (local / "unet").mkdir(parents=True)
    (local / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
    (local / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 10)
    before = model_revision(ModelSpec("my-svd"), tmp_path)
    (local / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 11)
    assert before.startswith("local:") and model_revision(ModelSpec(str(local)), tmp_path) != before
    assert model_revision(ModelSpec("builtin:tiny"), tmp_path) == "builtin"
    job = planned.jobs[0]
    assert with_cache_key(job, planned.recipe, commit_a).cache_key == job.cache_key
    assert with_cache_key(job, planned.recipe, commit_b).cache_key != job.cache_key


def test_failed_jobs_are_recorded_and_the_batch_goes_on(write_recipe, tmp_path):
    path = write_recipe(tiny([0, 1, 2], "  - name: rocket\n    image: inputs/rocket.jpg\n"))
    rocket = tmp_path / "inputs" / "rocket.jpg"

    def frames_for(job):
        if job.id == "rocket/euler/seed-0":
            rocket.write_bytes(rocket.read_bytes()[:-10])  # edited by someone while the batch runs
        shape = (4, 63, 63, 3) if job.seed == 1 else (4, 64, 64, 3)  # odd sizes: H.264 in yuv420p refuses them
        return np.zeros(shape, np.uint8) if job.seed == 0 and job.item == "coffee" else np.full(shape, 90, np.uint8)

    run = render_in_process(path, StandInEngine(frames_for))
    assert run.exit_code == 1
    outcome = {r.job.id: (r.status, r.detail) for r in run.results}
    assert outcome["coffee/euler/seed-0"] == ("failed", "every frame is black (NaN or overflow while decoding? try "
                                                        "dtype float32 or bfloat16)")
    assert outcome["coffee/euler/seed-1"][0] == "failed"
    assert outcome["coffee/euler/seed-1"][1].startswith("encoding mp4 failed: ffmpeg: ")
    assert outcome["coffee/euler/seed-2"][0] == "ok"
    assert outcome["rocket/euler/seed-0"] == ("failed", "inputs/rocket.jpg: the input image changed while the batch "
                                                        "ran; rerun to render it")
    folder = tmp_path / "out" / "coffee" / "euler"
    assert load_json(folder / "seed-1.json")["error"] == outcome["coffee/euler/seed-1"][1]
    assert sorted(p.name for p in folder.iterdir()) == ["seed-0.json", "seed-1.json", "seed-2.json", "seed-2.mp4"]
    assert temporaries(tmp_path / "out") == []


def test_encoding_overlaps_the_next_render_and_every_write_finishes(write_recipe, tmp_path):
    path = write_recipe(tiny([0, 1, 2]))
    folder = tmp_path / "out" / "coffee" / "euler"
    seen_when_rendering = {}

    def frames_for(job):
        # The previous job's mp4 is still being encoded (ffmpeg runs for tens of milliseconds) when this one starts:
        # its sidecar, written last, is not there yet.
        seen_when_rendering[job.seed] = sorted(p.name for p in folder.glob("seed-*.json")) if folder.exists() else []
        return np.full((4, 64, 64, 3), 100 + job.seed, np.uint8)

    run = render_in_process(path, StandInEngine(frames_for))
    assert [r.status for r in run.results] == ["ok"] * 3
    assert seen_when_rendering == {0: [], 1: [], 2: ["seed-0.json"]}
    for seed in range(3):
        sidecar = load_json(folder / f"seed-{seed}.json")
        assert sidecar["status"] == "ok" and sidecar["timings"]["encode"] > 0
        assert frame_count(folder / f"seed-{seed}.mp4") == 4
    assert load_json(tmp_path / "out" / "manifest.json")["counts"] == {"ok": 3}


def test_fail_fast_and_max_failures_stop_the_batch(write_recipe):
    path = write_recipe(tiny([0, 1, 2]))
    black = StandInEngine(lambda job: np.zeros((4, 64, 64, 3), np.uint8))
    assert [r.status for r in render_in_process(path, black, force=True).results] == ["failed"] * 3
    run = run_plan(make_plan(load_recipe(path), force=True), engine=black, quiet=True, max_failures=2)
    assert ([r.status for r in run.results], run.exit_code) == (["failed"] * 2, 1)
    run = run_plan(make_plan(load_recipe(path), force=True), engine=black, quiet=True, fail_fast=True)
    assert [r.status for r in run.results] == ["failed"]


def test_writes_never_leave_the_output_folder_through_a_symlinked_subfolder(write_recipe, tmp_path):
    path = write_recipe(tiny([0]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "coffee").symlink_to(elsewhere, target_is_directory=True)
    run = render_in_process(path)
    assert run.exit_code == 1
    assert run.results[0].detail == (f"refusing to write {tmp_path}/out/coffee/euler/seed-0.json: it resolves to "
                                     f"{elsewhere}/euler/seed-0.json, outside the output folder {tmp_path}/out "
                                     "(a symlinked subfolder?)")
    assert list(elsewhere.iterdir()) == []


# ---- in-process on the real tiny engine: out of memory, undecodable images ----

def oom(*args, **kwargs):
    import torch

    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


@pytest.fixture
def tiny_engine():
    from renderer.engine import Engine

    engine = Engine(ModelSpec("builtin:tiny"), device="cpu")
    engine.load()
    return engine


def test_out_of_memory_while_decoding_retries_with_a_smaller_decode_chunk(write_recipe, tiny_engine, monkeypatch):
    """CUDA OOM cannot happen on a CPU: the VAE decode raises torch.cuda.OutOfMemoryError once, as a GPU that is
    a little short of memory would; the retry decodes the same latents in chunks of 1 (the recipe asks for 2)."""
    decode = tiny_engine.pipe.decode_latents
    calls = []
    monkeypatch.setattr(tiny_engine.pipe, "decode_latents",
                        lambda latents, frames, chunk: calls.append(chunk) or (oom() if len(calls) == 1 else
                                                                               decode(latents, frames, chunk)))
    path = write_recipe(tiny([0]))
    run = render_in_process(path, tiny_engine)
    assert (run.exit_code, calls) == (0, [2, 1])
    sidecar = load_json(path.parent / "out" / "coffee" / "euler" / "seed-0.json")
    assert (sidecar["status"], sidecar["fallback"]) == ("ok", ["decode_chunk_size=1"])
    assert sidecar["settings"]["decode_chunk_size"] == 2


def test_out_of_memory_that_persists_fails_the_job_and_the_batch_goes_on(write_recipe, tiny_engine, monkeypatch,
                                                                          tmp_path):
    """CUDA OOM cannot happen on a CPU: the UNet raises torch.cuda.OutOfMemoryError on its first two calls, so the
    first job fails even with forward chunking (CPU offload needs a GPU), and the next job renders with forward
    chunking still on. A third job's image became undecodable after validation and fails on its own."""
    forward = tiny_engine.pipe.unet.forward
    calls = []
    monkeypatch.setattr(tiny_engine.pipe.unet, "forward",
                        lambda *a, **k: calls.append(1) or (oom() if len(calls) <= 2 else forward(*a, **k)))
    path = write_recipe(tiny([0, 1], "  - name: rocket\n    image: inputs/rocket.jpg\n"))
    plan = make_plan(load_recipe(path))
    (tmp_path / "inputs" / "rocket.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    run = run_plan(plan, engine=tiny_engine, quiet=True)
    assert run.exit_code == 1
    outcome = {r.job.id: (r.status, r.detail) for r in run.results}
    assert outcome["coffee/euler/seed-0"] == (
        "failed", "out of memory while denoising even with forward_chunking: CUDA out of memory. Tried to allocate "
                  "20.00 GiB (simulated); lower width, height or num_frames")
    assert outcome["coffee/euler/seed-1"][0] == "ok"
    assert load_json(tmp_path / "out" / "coffee" / "euler" / "seed-1.json")["fallback"] == ["forward_chunking"]
    assert outcome["rocket/euler/seed-0"] == ("failed", f"{tmp_path}/inputs/rocket.jpg: cannot be read: Truncated "
                                                        "File Read")


# ---- a run that tells the truth: the run record, "not run" jobs, and reports a CI reader sees as failed ----

def reports(out: Path) -> tuple[dict, ET.Element, list[str], int]:
    """The manifest, the JUnit suite and the markdown lines `svdrender report` gives for `out`, and its exit code
    without --no-fail (the reports themselves come with --no-fail, which exits 0)."""
    verdict = invoke_cli("report", out)
    junit = invoke_cli("report", out, "--no-fail", "--format", "junit")
    markdown = invoke_cli("report", out, "--no-fail", "--format", "markdown")
    assert junit.returncode == markdown.returncode == 0, junit.stderr + markdown.stderr
    assert "Traceback" not in verdict.stderr + junit.stderr + markdown.stderr
    return (load_json(out / "manifest.json"), ET.fromstring(junit.stdout.encode()).find("testsuite"),
            markdown.stdout.splitlines(), verdict.returncode)


def junit_cases(suite: ET.Element) -> dict[str, tuple[str, str | None]]:
    """Each test case's name → (what it holds: ok / failure / error / skipped, its message)."""
    found = {}
    for case in suite.iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        found[case.get("name")] = ("ok", None) if problem is None else (problem.tag, problem.get("message"))
    return found


def test_a_model_that_cannot_load_is_a_failed_run_listing_every_job_as_not_run(write_recipe, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
    path = write_recipe(tiny([0, 1], "  - name: rocket\n    image: inputs/rocket.jpg\n")
                        .replace("model: builtin:tiny", "model: ./broken-model"))
    out = tmp_path / "out"
    proc = invoke_cli(path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1].removeprefix("svdrender: ")
    assert error.startswith(f"model folder {broken} cannot be loaded as a StableVideoDiffusionPipeline")
    manifest, suite, markdown, code = reports(out)
    ids = ["coffee/euler/seed-0", "coffee/euler/seed-1", "rocket/euler/seed-0"]
    assert (manifest["run"]["outcome"], manifest["run"]["error"], manifest["run"]["exit_code"]) == ("failed", error, 1)
    assert [(j["job_id"], j["status"], j["detail"]) for j in manifest["run"]["jobs"]] == [
        (i, "not run", f"not run: {error}") for i in ids]
    assert manifest["counts"] == {"not run": 3}
    assert junit_cases(suite) == {"run": ("error", error), **{i: ("skipped", f"not run: {error}") for i in ids}}
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "4", "failures": "0", "errors": "1", "skipped": "3"}
    assert markdown[0].startswith("## ❌ svdrender:")
    assert markdown[2].startswith("**run failed: model folder ") and "cannot be loaded as a Stable" in markdown[2]
    assert markdown[4] == "3 jobs: 3 not run."
    assert code == 1
    assert not (out / LOCK_NAME).exists()


def test_sigint_mid_batch_lists_the_interrupted_job_and_every_job_that_never_started(write_recipe, tmp_path):
    path = write_recipe(slow(tiny([0, 1, 2, 3])))
    out = tmp_path / "out"
    run = LiveRun(path)
    run.wait_for_line(r"^\[1/4\] coffee/euler/seed-0 ok")
    run.proc.send_signal(signal.SIGINT)
    _, stderr = run.finish()
    assert run.proc.returncode == 130, stderr
    manifest, suite, markdown, code = reports(out)
    assert (manifest["run"]["outcome"], manifest["run"]["error"]) == ("interrupted", "interrupted by SIGINT")
    statuses = [(j["job_id"], j["status"]) for j in manifest["run"]["jobs"]]
    assert statuses == [("coffee/euler/seed-0", "ok"), ("coffee/euler/seed-1", "interrupted"),
                        ("coffee/euler/seed-2", "not run"), ("coffee/euler/seed-3", "not run")]
    assert manifest["counts"] == {"interrupted": 1, "not run": 2, "ok": 1}
    assert junit_cases(suite) == {"coffee/euler/seed-0": ("ok", None),
                                  "coffee/euler/seed-1": ("error", "interrupted by SIGINT"),
                                  "coffee/euler/seed-2": ("skipped", "not run: interrupted by SIGINT"),
                                  "coffee/euler/seed-3": ("skipped", "not run: interrupted by SIGINT")}
    assert markdown[:5] == ["## ❌ svdrender: recipe", "", "**run interrupted: interrupted by SIGINT**", "",
                            "4 jobs: 1 interrupted, 2 not run, 1 ok."]
    assert code == 1
    assert not (out / LOCK_NAME).exists() and temporaries(out) == []


def test_a_failed_job_makes_the_run_and_every_report_fail(write_recipe, tmp_path):
    path = write_recipe(tiny([0, 1]))
    out = tmp_path / "out"
    # A folder where the video should go: encoding works, placing the file cannot.
    (out / "coffee" / "euler" / "seed-0.mp4").mkdir(parents=True)
    proc = invoke_cli(path)
    assert proc.returncode == 1, proc.stderr
    manifest, suite, markdown, code = reports(out)
    assert (manifest["run"]["outcome"], manifest["run"]["error"]) == ("failed", None)
    assert [j["status"] for j in manifest["run"]["jobs"]] == ["failed", "ok"]
    cases = junit_cases(suite)
    assert cases["coffee/euler/seed-0"][0] == "failure" and "Is a directory" in cases["coffee/euler/seed-0"][1]
    assert cases["coffee/euler/seed-1"] == ("ok", None) and "run" not in cases
    assert markdown[0] == "## ❌ svdrender: recipe" and markdown[2] == "**run failed**"
    assert code == 1
    # Once the job renders, the run and its reports are green again.
    (out / "coffee" / "euler" / "seed-0.mp4").rmdir()
    assert invoke_cli(path).returncode == 0
    manifest, suite, markdown, code = reports(out)
    assert (manifest["run"]["outcome"], code, markdown[0]) == ("ok", 0, "## ✅ svdrender: recipe")
    assert [j["status"] for j in manifest["run"]["jobs"]] == ["ok", "skipped"]
    assert junit_cases(suite) == {"coffee/euler/seed-0": ("ok", None), "coffee/euler/seed-1": ("ok", None)}


# ---- sidecars are data from disk, not trusted state ----

def test_a_malformed_sidecar_makes_its_job_corrupt_and_it_renders_again(write_recipe, tmp_path):
    path = write_recipe(tiny([0, 1]))
    assert render_in_process(path).exit_code == 0
    out = tmp_path / "out"
    sidecar = out / "coffee" / "euler" / "seed-0.json"
    sidecar.write_text(json.dumps({**load_json(sidecar), "width": "abc"}))
    job = make_plan(load_recipe(path)).jobs[0]
    assert job.render_reason == "sidecar corrupt: $.width: 'abc' is not of type 'integer'"
    # The report and the contact sheet are made anyway; the job is shown as corrupt, and the folder not green.
    report = invoke_cli("report", out, "--format", "json")
    assert (report.returncode, report.stderr) == (1, "")
    document = json.loads(report.stdout)
    assert [(j["id"], j["status"]) for j in document["jobs"]] == [("coffee/euler/seed-0", "corrupt"),
                                                                   ("coffee/euler/seed-1", "ok")]
    assert document["corrupt"] == ["coffee/euler/seed-0.json: $.width: 'abc' is not of type 'integer'"]
    assert 'id="coffee/euler/seed-1"' in (out / "index.html").read_text(encoding="utf-8")
    rerun = render_in_process(path)
    assert [(r.job.id, r.status) for r in rerun.results] == [("coffee/euler/seed-1", "skipped"),
                                                            ("coffee/euler/seed-0", "ok")]
    assert load_json(sidecar)["width"] == 64


def test_only_the_planned_outputs_as_regular_files_with_their_recorded_hashes_count_as_done(write_recipe, tmp_path):
    path = write_recipe(tiny(range(6)))
    assert render_in_process(path).exit_code == 0
    folder = tmp_path / "out" / "coffee" / "euler"
    elsewhere = tmp_path / "elsewhere.mp4"
    shutil.copy(folder / "seed-2.mp4", elsewhere)

    def edit(seed, **changes):
        record = load_json(folder / f"seed-{seed}.json")
        (folder / f"seed-{seed}.json").write_text(json.dumps({**record, **changes}))
        return record

    edit(0, files=[])  # the sidecar lists nothing, and the video is gone
    (folder / "seed-0.mp4").unlink()
    # A listed file that never ends: the plan must not read it.
    edit(1, files=[{"format": "mp4", "path": "/dev/zero", "sha256": "0" * 64, "bytes": 0}])
    record = edit(2)
    edit(2, files=[{**record["files"][0], "path": "../../../elsewhere.mp4"}])  # an intact copy, elsewhere
    (folder / "seed-2.mp4").unlink()
    (folder / "seed-3.mp4").unlink()  # the video replaced by a symlink to an identical file
    (folder / "seed-3.mp4").symlink_to(elsewhere)
    (folder / "seed-4.json").unlink()
    os.mkfifo(folder / "seed-4.json")  # a sidecar nobody will ever write to
    plan = run_cli("plan", path, timeout=120)
    assert plan.returncode == 0, plan.stderr
    reasons = dict(re.findall(r"^(\S+) +(?:skip|render) .*\((.*)\)$", plan.stdout, re.MULTILINE))
    assert reasons == {"coffee/euler/seed-0": "sidecar corrupt: $.files: [] should be non-empty",
                       "coffee/euler/seed-1": "output missing: seed-1.mp4",
                       "coffee/euler/seed-2": "output missing: seed-2.mp4",
                       "coffee/euler/seed-3": "output corrupt: seed-3.mp4 is not a regular file",
                       "coffee/euler/seed-4": "sidecar corrupt: not a regular file",
                       "coffee/euler/seed-5": "done: same settings, files intact"}


# ---- every delete and write is confined ----

def test_the_sweep_removes_only_temporaries_svdrender_recorded_and_never_enters_a_nested_run(write_recipe, tmp_path):
    path = write_recipe(tiny([0, 1]))
    out = tmp_path / "out"
    folder = out / "coffee" / "euler"
    folder.mkdir(parents=True)
    killed = "abcdefabcdefabcd"  # a run that was killed here: its id is still in the lock file
    (out / LOCK_NAME).write_text(f"4242\n{killed}\n")
    ours = [folder / f".seed-0.mp4{TMP_MARKER}{killed}", out / f".manifest.json{TMP_MARKER}{killed}",
            folder.parent / f".input.jpg{TMP_MARKER}{killed}"]
    for temporary in ours:
        temporary.write_bytes(b"half a video")
    theirs = [folder / "notes.svdtmp-keep.txt",  # a user's file that merely contains the marker
              folder / f".seed-9.mp4{TMP_MARKER}0123456789abcdef",  # named like ours, by no run recorded here
              out / f"draft{TMP_MARKER}{killed}",  # a recorded id, but not a name svdrender gives temporaries
              # finished work of an item whose name holds the marker and a recorded id (issue 20, defect 1)
              out / f"cup{TMP_MARKER}{killed}" / "euler" / "seed-0.mp4"]
    for user_file in theirs:
        user_file.parent.mkdir(parents=True, exist_ok=True)
        user_file.write_text("mine")
    # Another run's output folder inside this one, in the middle of its own run.
    nested = out / "nested" / "inner"
    nested_job = nested / "coffee" / "euler"
    nested_job.mkdir(parents=True)
    (nested / LOCK_NAME).write_text(f"4343\n{killed}\n")
    (nested / "manifest.json").write_text('{"kind": "svdrender.run"}')
    in_flight = nested_job / f".seed-0.mp4{TMP_MARKER}{killed}"
    in_flight.write_bytes(b"still encoding")
    shutil.copy(folder.parent.parent / LOCK_NAME, nested / "lock-copy")
    run = render_in_process(path)
    assert run.exit_code == 0
    assert [p for p in ours if p.exists()] == []
    assert [p.read_text() for p in theirs] == ["mine"] * 4
    assert in_flight.read_bytes() == b"still encoding" and (nested / LOCK_NAME).exists()
    assert not (out / LOCK_NAME).exists(), "a finished run leaves no lock file for an artefact glob to pick up"
    manifest = load_json(out / "manifest.json")
    assert [j["job_id"] for j in manifest["jobs"]] == ["coffee/euler/seed-0", "coffee/euler/seed-1"]


def test_a_nested_runs_jobs_are_not_pulled_into_the_outer_manifest(write_recipe, tmp_path):
    path = write_recipe(tiny([0]))
    inner = write_recipe(tiny([1]).replace("output: {dir: out}", "output: {dir: out/sub}"), "inner.yaml")
    assert render_in_process(inner).exit_code == 0  # out/sub/coffee/euler/seed-1.json, and its own manifest
    assert render_in_process(path).exit_code == 0
    assert [j["job_id"] for j in load_json(tmp_path / "out" / "manifest.json")["jobs"]] == ["coffee/euler/seed-0"]


@pytest.mark.parametrize("name, content", [("manifest.json", '{"mine": true}\n'),
                                           ("index.html", "<html>my page</html>\n")])
def test_a_manifest_or_contact_sheet_that_is_not_svdrenders_is_never_overwritten(write_recipe, tmp_path, name,
                                                                                   content):
    path = write_recipe(tiny([0]))
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(content)
    for args in ((path,), ("report", out)):
        proc = invoke_cli(*args)
        assert (proc.returncode, proc.stderr) == (2, f"svdrender: {out / name}: not written by svdrender; refusing "
                                                     "to overwrite it (move it away, or render into another folder "
                                                     "with --out)\n")
        assert sorted(p.name for p in out.iterdir()) == [name] and (out / name).read_text() == content


def test_report_while_a_render_holds_the_folder_reads_a_snapshot_and_writes_nothing(write_recipe, tmp_path):
    from renderer.lock import output_lock

    path = write_recipe(tiny([0]))
    assert render_in_process(path).exit_code == 0
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in (out / "manifest.json", out / "index.html")}
    with output_lock(out, ("0123456789abcdef",)):
        proc = run_cli("report", out)
    assert (proc.returncode, proc.stdout) == (0, f"{out}: 1 jobs (a render is writing here: nothing rewritten)\n")
    assert {p: p.read_bytes() for p in before} == before


def test_an_output_folder_that_cannot_be_written_is_one_line_and_a_documented_exit_code(write_recipe, tmp_path):
    path = write_recipe(tiny([0]))
    too_long = tmp_path / ("x" * 300)
    proc = invoke_cli(path, "--out", too_long)
    assert (proc.returncode, proc.stderr) == (1, f"svdrender: {too_long}: cannot take the output lock (File name "
                                                 "too long)\n")


ENCODE_UNTIL_KILLED = """
import sys, threading
from pathlib import Path
import numpy as np
from renderer.outputs import encode_video
# Enough noise that libvpx needs many seconds: the test kills this process while ffmpeg writes its temporary.
frames = np.random.default_rng(0).integers(0, 256, (240, 256, 256, 3), dtype=np.uint8)
out = Path(sys.argv[1])
threading.Thread(target=encode_video, args=(frames, out / "seed-0.webm", "webm", 7), daemon=True).start()
threading.Event().wait()
"""


def ffmpeg_writing(folder: Path) -> list[int]:
    """Pids of live processes whose command line names a temporary in `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(TMP_MARKER.encode() in a and str(folder).encode() in a for a in cmdline):
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_ffmpeg_dies_with_svdrender(tmp_path):
    """svdrender exits at once on a second signal (os._exit, as SIGKILL does): its ffmpeg must not go on writing."""
    proc = subprocess.Popen([sys.executable, "-c", ENCODE_UNTIL_KILLED, str(tmp_path)], cwd=REPO, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while not (ffmpeg_writing(tmp_path) and temporaries(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "ffmpeg never started"
            time.sleep(0.05)
        [encoder] = ffmpeg_writing(tmp_path)
        time.sleep(1)  # let ffmpeg take in frames it would still encode and write if it outlived its parent
    finally:
        proc.kill()
        proc.wait()
    [temporary] = temporaries(tmp_path)
    size_at_exit = temporary.stat().st_size
    deadline = time.monotonic() + 60
    while ffmpeg_writing(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ffmpeg_writing(tmp_path) == [], f"ffmpeg (pid {encoder}) outlived the process that started it"
    assert temporary.stat().st_size == size_at_exit, "ffmpeg went on writing after its parent was gone"


def test_plan_shows_every_formats_path(write_recipe):
    path = write_recipe(tiny([0]).replace("output: {dir: out}", "output: {dir: out, formats: [mp4, gif, frames]}"))
    plan = invoke_cli("plan", path)
    assert plan.returncode == 0, plan.stderr
    assert "-> coffee/euler/seed-0.mp4, coffee/euler/seed-0.gif, coffee/euler/seed-0/ (new)" in plan.stdout


@pytest.mark.parametrize("user, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")], ids=["unset", "user's choice"])
def test_openmp_threads_sleep_while_they_wait_unless_the_user_chose(user, expected):
    """Spinning OpenMP threads made the first CPU job 4-8x slower than the next ones (benchmarks/cpu_first_job.py);
    the policy must be in the environment before torch is imported, and a user's own setting wins."""
    code = ("import os, sys\nfrom renderer.batch import prefer_passive_openmp\nprefer_passive_openmp()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in cli_env().items() if k != "OMP_WAIT_POLICY"}
    if user:
        env["OMP_WAIT_POLICY"] = user
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"{expected} False\n"), proc.stderr


def test_an_unforeseen_error_still_leaves_a_manifest_that_says_failed(write_recipe, tmp_path):
    class Broken(StandInEngine):
        def prefetch(self, job):
            raise RuntimeError("boom")  # stands for a bug: an error outside any job, which nothing catches

    path = write_recipe(tiny([0, 1]))
    with pytest.raises(RuntimeError, match="boom"):
        render_in_process(path, Broken())
    run = load_json(tmp_path / "out" / "manifest.json")["run"]
    assert (run["outcome"], run["error"], run["exit_code"]) == ("failed", "RuntimeError: boom", 1)
    assert [(j["job_id"], j["status"]) for j in run["jobs"]] == [("coffee/euler/seed-0", "not run"),
                                                                ("coffee/euler/seed-1", "not run")]
    assert not (tmp_path / "out" / LOCK_NAME).exists() or lock_is_free(tmp_path / "out")
