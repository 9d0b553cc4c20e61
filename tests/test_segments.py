"""Longer videos by chaining segments (`segments: N`): each segment after the first is conditioned on the last frame
of the one before, with its own seed, and leaves out its first frame. Rendered through the real CLI on builtin:tiny;
the frames format (lossless PNGs) lets the tests compare exact pixels."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import INPUTS, REPO, cli_env, load_json, run_cli
from renderer.layout import TMP_MARKER
from renderer.records import read_sidecar

N_FRAMES, SEGMENTS = 5, 3
TOTAL = N_FRAMES + (SEGMENTS - 1) * (N_FRAMES - 1)  # 13

RECIPE = """
version: 1
model: builtin:tiny
output: {{dir: {out}, formats: [mp4, frames]}}
defaults:
  width: 64
  height: 64
  num_frames: 5
  num_inference_steps: 2
  decode_chunk_size: 2
items:
{items}"""
CHAIN = "  - {name: chain, image: inputs/coffee.jpg, segments: 3}\n"
LOOPED = "  - {name: chain-loop, image: inputs/coffee.jpg, segments: 3, loop: pingpong}\n"
SINGLE = ("  - {name: single, image: inputs/coffee.jpg}\n"
          "  - {name: single-explicit, image: inputs/coffee.jpg, segments: 1}\n")


def write(folder: Path, name: str, out: str, items: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(RECIPE).lstrip().format(out=out, items=items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One render: a video of 3 segments, the same looped, and two one-segment videos (the setting left out, and
    `segments: 1`)."""
    folder = tmp_path_factory.mktemp("segments")
    shutil.copytree(INPUTS, folder / "inputs")
    recipe = write(folder, "recipe.yaml", "out", CHAIN + LOOPED + SINGLE)
    run = run_cli(recipe)
    assert run.returncode == 0, run.stderr
    return folder, run


@pytest.fixture(scope="module")
def second(first):
    """A second render: a one-segment job on segment 0's last frame with segment 1's seed (what segment 1 is said to
    be), then the same chained job again (now second in its batch, its input prepared while the first renders)."""
    folder, _ = first
    seed = load_json(folder / "out" / "chain" / "euler" / "seed-0.json")["segments"][1]["seed"]
    junction = f"  - {{name: junction, image: out/chain/euler/seed-0/frame-0004.png, seeds: [{seed}]}}\n"
    recipe = write(folder, "again.yaml", "again", junction + CHAIN)
    run = run_cli(recipe)
    assert run.returncode == 0, run.stderr
    return folder, seed


def frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(png).convert("RGB")) for png in sorted(folder.glob("frame-*.png"))]


def ffprobe_frames(video: Path) -> int:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is missing: install Debian's ffmpeg package (tests/run does)"
    out = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(video)], capture_output=True, text=True)
    return int(out.stdout.strip())


def test_a_chained_video_has_n_plus_n_minus_one_frames_per_later_segment(first):
    folder, _ = first
    job = folder / "out" / "chain" / "euler" / "seed-0"
    assert ffprobe_frames(job.with_suffix(".mp4")) == TOTAL == 13
    assert len(frames(job)) == TOTAL
    assert load_json(job.with_suffix(".json"))["frame_count"] == TOTAL
    assert ffprobe_frames(folder / "out" / "single" / "euler" / "seed-0.mp4") == N_FRAMES


def test_a_loop_plays_the_whole_chained_video_forward_then_back(first):
    folder, _ = first
    chained = frames(folder / "out" / "chain" / "euler" / "seed-0")
    looped = folder / "out" / "chain-loop" / "euler" / "seed-0"
    assert ffprobe_frames(looped.with_suffix(".mp4")) == 2 * TOTAL - 2
    assert all(np.array_equal(a, b) for a, b in zip(frames(looped), chained + chained[-2:0:-1], strict=True))
    sidecar = load_json(looped.with_suffix(".json"))
    assert (sidecar["frame_count"], sidecar["motion"]["model_frames"], len(sidecar["segments"])) == (
        2 * TOTAL - 2, TOTAL, SEGMENTS)


def test_one_segment_writes_the_same_bytes_as_a_recipe_without_the_setting(first):
    folder, _ = first
    plain, explicit = (load_json(folder / "out" / name / "euler" / "seed-0.json")
                       for name in ("single", "single-explicit"))
    assert explicit["settings"]["segments"] == 1
    assert explicit["frames_sha256"] == plain["frames_sha256"]
    assert [(f["path"], f["sha256"]) for f in explicit["files"]] == [(f["path"], f["sha256"]) for f in plain["files"]]
    # Keyed as before segments existed: jobs finished then are still done.
    assert explicit["cache_key"] == plain["cache_key"] and "segments" not in plain["cache_inputs"]["settings"]


def test_the_sidecar_records_every_segment(first):
    folder, _ = first
    path = folder / "out" / "chain" / "euler" / "seed-0.json"
    sidecar = read_sidecar(path)  # validates against schemas/manifest.schema.json
    segments = sidecar.segments
    assert [s.index for s in segments] == [0, 1, 2]
    # Segment 0 has the job's seed; segment k the documented sha256 formula.
    expected = [0] + [int.from_bytes(hashlib.sha256(f"0/{k}".encode()).digest()[:8], "big") % 2**63 for k in (1, 2)]
    assert [s.seed for s in segments] == expected and len(set(expected)) == 3
    assert [(s.first_frame, s.last_frame) for s in segments] == [(0, 4), (5, 8), (9, 12)]
    assert [s.conditioning_frame for s in segments] == [None, 4, 8]
    assert segments[0].conditioning_sha256 == sidecar.data["input"]["sha256"]
    for name in ("prepare", "denoise", "decode"):
        assert all(s.timings[name] > 0 for s in segments)
        assert sidecar.timings[name] == pytest.approx(sum(s.timings[name] for s in segments), abs=0.01)
    one = read_sidecar(folder / "out" / "single" / "euler" / "seed-0.json").segments
    assert [(s.seed, s.conditioning_frame, s.first_frame, s.last_frame) for s in one] == [(0, None, 0, 4)]
    assert "<td>segments</td><td>3</td>" in (folder / "out" / "index.html").read_text(encoding="utf-8")


def test_each_segment_is_conditioned_on_the_frame_at_the_junction(first):
    folder, _ = first
    chain = frames(folder / "out" / "chain" / "euler" / "seed-0")
    segments = load_json(folder / "out" / "chain" / "euler" / "seed-0.json")["segments"]
    for before, after in zip(segments, segments[1:]):
        assert after["conditioning_frame"] == before["last_frame"]
        assert hashlib.sha256(chain[before["last_frame"]].tobytes()).hexdigest() == after["conditioning_sha256"]
    # Segment 0 is the job as one segment renders it.
    single = frames(folder / "out" / "single" / "euler" / "seed-0")
    assert all((a == b).all() for a, b in zip(chain[:N_FRAMES], single, strict=True))
    assert not (chain[N_FRAMES] == chain[N_FRAMES - 1]).all()


def test_a_segment_is_what_a_job_on_the_junction_frame_with_its_seed_renders_minus_its_first_frame(second):
    folder, seed = second
    chain = frames(folder / "out" / "chain" / "euler" / "seed-0")
    junction = frames(folder / "again" / "junction" / "euler" / f"seed-{seed}")
    assert len(junction) == N_FRAMES
    assert all((a == b).all() for a, b in zip(chain[N_FRAMES:2 * N_FRAMES - 1], junction[1:], strict=True))


def test_the_same_seed_renders_the_same_video_again(second):
    folder, _ = second
    before, again = (load_json(folder / out / "chain" / "euler" / "seed-0.json") for out in ("out", "again"))
    assert again["frames_sha256"] == before["frames_sha256"]
    assert again["segments"][1:] and [s["seed"] for s in again["segments"]] == [s["seed"] for s in before["segments"]]
    assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in before["files"]]


def test_progress_shows_each_segment(first):
    _, run = first
    lines = run.stderr.splitlines()
    shown = [line for line in lines if line.startswith("chain/") and " segment " in line]
    assert shown == [f"chain/euler/seed-0 segment {k}/3" for k in (1, 2, 3)]
    finished = next(i for i, line in enumerate(lines) if line.startswith("[1/4] chain/euler/seed-0 ok"))
    assert lines.index(shown[-1]) < finished


def test_plan_shows_segments_and_renders_again_when_their_count_changes(first):
    folder, _ = first
    plan = run_cli("plan", folder / "recipe.yaml")
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"chain/euler/seed-0 +skip +64x64 13f \(3 segments of 5\) 2 steps", plan.stdout)
    assert re.search(r"single-explicit/euler/seed-0 +skip +64x64 5f 2 steps", plan.stdout)
    write(folder, "changed.yaml", "out", CHAIN.replace("segments: 3", "segments: 2")
          + SINGLE.replace("single-explicit, image: inputs/coffee.jpg, segments: 1",
                           "single-explicit, image: inputs/coffee.jpg, segments: 4"))
    plan = run_cli("plan", folder / "changed.yaml")
    assert re.search(r"chain/euler/seed-0 +render +64x64 9f \(2 segments of 5\) .*\(changed: segments\)", plan.stdout)
    assert re.search(r"single-explicit/euler/seed-0 +render +64x64 17f .*\(changed: segments\)", plan.stdout)
    assert re.search(r"single/euler/seed-0 +skip", plan.stdout)


def test_segments_refused_at_their_recipe_line(write_recipe):
    path = write_recipe("""
        version: 1
        model: builtin:tiny
        defaults:
          segments: 0
        presets:
          long: {scheduler: euler, segments: 17}
        items:
          - {name: a, image: inputs/coffee.jpg, segments: 1.5}
          - {name: b, image: inputs/coffee.jpg, segments: two}
          - {name: c, image: inputs/coffee.jpg, segments: true}
          - {name: d, image: inputs/coffee.jpg, segments: 1000000}
          - {name: e, image: inputs/coffee.jpg, segments: 2, num_frames: 1}
          - {name: f, image: inputs/coffee.jpg, presets: [long]}
    """)
    run = run_cli("validate", path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [f"{path}:{where}: {message}" for where, message in [
        ("4:13", "$.defaults.segments: 0 is out of range: must be at least 1"),
        ("6:38", "$.presets.long.segments: 17 is out of range: must be at most 16"),
        ("8:51", "$.items[0].segments: expected integer, got a number 1.5"),
        ("9:51", "$.items[1].segments: expected integer, got a string 'two'"),
        ("10:51", "$.items[2].segments: expected integer, got a boolean True"),
        ("11:51", "$.items[3].segments: 1000000 is out of range: must be at most 16"),
        ("12:51", "$.items[4].segments: segments 2 needs num_frames of at least 2 for e/euler: a segment after the "
                  "first adds num_frames - 1 frames"),
    ]] + ["7 problems found."]


def test_a_crossfade_may_span_segments_but_not_more_than_the_whole_video(write_recipe):
    path = write_recipe("""
        version: 1
        model: builtin:tiny
        defaults: {segments: 2, num_frames: 3, loop: crossfade}
        items:
          - {name: fits, image: inputs/coffee.jpg, crossfade_frames: 2}
          - {name: long, image: inputs/coffee.jpg, crossfade_frames: 3}
    """)
    run = run_cli("validate", path)
    assert (run.returncode, run.stderr.splitlines()) == (2, [
        f"{path}:6:62: $.items[1].crossfade_frames: crossfade_frames 3 blends that many frames from each end, so it "
        "needs a video of at least 6 frames, but long/euler makes 5 (2 segments of 3); lower crossfade_frames to at "
        "most 2", "1 problem found."])


def test_cost_and_the_auto_profiles_work_scale_with_segments(write_recipe):
    from renderer.engine import Engine
    from renderer.plan import make_plan
    from renderer.recipe import load_recipe
    from renderer.shards import split

    path = write_recipe("""
        version: 1
        model: builtin:tiny
        defaults: {width: 64, height: 64, num_frames: 5, num_inference_steps: 2}
        items:
          - {name: one, image: inputs/coffee.jpg, seeds: [0, 1]}
          - {name: four, image: inputs/coffee.jpg, segments: 4}
    """)
    jobs = make_plan(load_recipe(path)).jobs
    assert [j.id for j in jobs] == ["one/euler/seed-0", "one/euler/seed-1", "four/euler/seed-0"]
    assert jobs[2].cost == 4 * jobs[0].cost
    # The four-segment job outweighs both one-segment jobs together: a shard of its own.
    assert [[j.id for j in shard] for shard in split(jobs, 2)] == [["four/euler/seed-0"],
                                                                   ["one/euler/seed-0", "one/euler/seed-1"]]
    assert [w.unet_calls for w in Engine(load_recipe(path).model, device="cpu", jobs=jobs).work] == [2, 2, 8]


def test_sigterm_in_a_later_segment_keeps_nothing_of_the_job_and_exits_143(write_recipe, tmp_path):
    path = write_recipe("""
        version: 1
        model: builtin:tiny
        output: {dir: out, formats: [mp4, frames]}
        defaults: {width: 64, height: 64, num_frames: 4, num_inference_steps: 4, segments: 16}
        items:
          - {name: long, image: inputs/coffee.jpg}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "renderer", str(path)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("long/euler/seed-0 segment 2/16"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[1]
    stderr = "".join(seen) + rest
    assert proc.returncode == 143, stderr
    assert "[1/1] long/euler/seed-0 interrupted (interrupted by SIGTERM)" in stderr
    assert "segment 16/16" not in stderr and "Traceback" not in stderr
    out = tmp_path / "out"
    sidecar = load_json(out / "long" / "euler" / "seed-0.json")
    assert (sidecar["status"], sidecar["segments"], sidecar["files"]) == ("interrupted", None, [])
    assert not (out / "long" / "euler" / "seed-0.mp4").exists()
    assert not (out / "long" / "euler" / "seed-0").exists()
    assert not list(out.rglob(f"*{TMP_MARKER}*"))
    plan = run_cli("plan", path)
    assert re.search(r"long/euler/seed-0 +render .*\(previous run was interrupted\)", plan.stdout)
