"""Loops and output frame rates (renderer/motion.py): the frame arithmetic and ffmpeg's minterpolate on synthetic
frames in-process, then one real CLI render on builtin:tiny whose files ffprobe, PIL and the PNG frames check, a
rerun that resumes, changed settings that render again, and the refusals at the recipe's lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import jsonschema
import numpy as np
import pytest
from PIL import Image

from conftest import INPUTS, REPO, TINY_RECIPE, load_json, run_cli
from renderer.errors import JobError
from renderer.motion import INTERPOLATORS, MAX_OUTPUT_FRAMES, Interpolator, Motion, crossfade, interpolated_count, loop


def bar_clip(n: int = 6, width: int = 96, step: int = 12) -> np.ndarray:
    """A white bar 12 px wide moving `step` px a frame over black: motion an interpolator can follow."""
    frames = np.zeros((n, 32, width, 3), np.uint8)
    for i in range(n):
        frames[i, :, 8 + step * i:20 + step * i] = 255
    return frames


def column_profile(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64).mean(axis=(0, 2))


def centroid(frame: np.ndarray) -> float:
    profile = column_profile(frame)
    return float((profile * np.arange(len(profile))).sum() / profile.sum())


# --- the frame arithmetic ------------------------------------------------------------------------------------------

def test_pingpong_goes_back_without_repeating_either_end():
    frames = np.arange(5)[:, None, None, None].repeat(2, axis=1).astype(np.uint8)
    assert loop(frames, "pingpong", 4)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    for n in (1, 2, 3, 25):
        assert len(loop(np.zeros((n, 1, 1, 3), np.uint8), "pingpong", 4)) == Motion(
            "pingpong", 4, "none", 7, 7).frame_count(n) == max(2 * n - 2, 1)


def test_crossfade_blends_the_end_into_the_start():
    frames = (np.arange(10, dtype=np.uint8) * 20)[:, None, None, None].repeat(3, axis=3)
    out = crossfade(frames, 3)[:, 0, 0, 0].tolist()
    # Tail 140, 160, 180 blended into head 0, 20, 40 with head weights 1/4, 2/4, 3/4; then frames 3..6.
    assert out == [105, 90, 75, 60, 80, 100, 120]
    assert Motion("crossfade", 3, "none", 7, 7).frame_count(10) == 7
    with pytest.raises(JobError, match="crossfade of 6 frames needs at least 12 frames, got 10"):
        crossfade(frames, 6)


@pytest.mark.parametrize("n, fps, output_fps, expected", [(8, 7, 24, 27), (14, 7, 24, 48), (25, 6, 30, 125),
                                                          (1, 7, 8, 1), (3, 2, 3, 5), (4, 1, 240, 960)])
def test_interpolated_count_keeps_the_duration(n, fps, output_fps, expected):
    assert interpolated_count(n, fps, output_fps) == expected


def test_only_settings_that_change_the_files_are_cache_inputs():
    assert Motion("none", 4, "none", 7, 7).cache_inputs() == {}
    assert Motion("none", 9, "none", 7, 7).cache_inputs() == {}  # a crossfade length without a crossfade
    assert Motion("crossfade", 3, "none", 7, 7).cache_inputs() == {"loop": "crossfade", "crossfade_frames": 3}
    assert Motion("pingpong", 3, "mci", 7, 24).cache_inputs() == {"loop": "pingpong", "output_fps": 24,
                                                                  "interpolation": "mci"}
    assert Motion("none", 4, "none", 7, 14).cache_inputs() == {"output_fps": 14}


def test_a_job_without_these_settings_keeps_its_cache_key(write_recipe):
    from renderer.plan import plan_recipe

    job = plan_recipe(write_recipe(TINY_RECIPE), check_images=False).jobs[0]
    assert not set(job.cache_inputs["settings"]) & {"loop", "crossfade_frames", "interpolation", "output_fps"}
    assert job.settings.output_fps == job.settings.fps == 7


# --- ffmpeg's minterpolate -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["duplicate", "blend", "mci"])
@pytest.mark.parametrize("cyclic", [False, True], ids=["clip", "loop"])
def test_every_interpolator_makes_the_predicted_frame_count(name, cyclic):
    rng = np.random.default_rng(0)
    for n, fps, output_fps in ((2, 7, 8), (5, 7, 24), (9, 6, 25), (4, 1, 3)):
        frames = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # mci's smallest size; recipes' is 64
        made = INTERPOLATORS[name](frames, fps, output_fps, cyclic=cyclic)
        assert made.shape == (interpolated_count(n, fps, output_fps), 32, 32, 3), (n, fps, output_fps)
        # The first frame is the clip's first, through minterpolate's YUV 4:4:4 round trip.
        assert np.abs(made[0].astype(int) - frames[0]).max() <= 3


def test_mci_moves_the_bar_where_blend_ghosts_and_duplicate_repeats():
    clip = bar_clip()
    halfway = {name: INTERPOLATORS[name](clip, 7, 14, cyclic=False)[5] for name in ("duplicate", "blend", "mci")}
    # Output frame 5 lies halfway between frames 2 (bar at 32..43, centre 37.5) and 3 (centre 49.5).
    assert centroid(halfway["duplicate"]) == pytest.approx(37.5, abs=0.5)
    assert centroid(halfway["blend"]) == pytest.approx(43.5, abs=0.5)
    assert centroid(halfway["mci"]) == pytest.approx(43.5, abs=1.0)
    assert column_profile(halfway["blend"]).max() == pytest.approx(128, abs=3)  # two half-bright bars
    assert column_profile(halfway["mci"]).max() > 230  # one bar, moved


def test_a_loop_is_interpolated_across_its_seam_and_a_clip_holds_its_last_frame():
    frames = np.full((2, 32, 32, 3), 100, np.uint8)
    frames[1] = 200
    looped = [round(f.mean()) for f in INTERPOLATORS["blend"](frames, 1, 4, cyclic=True)]
    held = [round(f.mean()) for f in INTERPOLATORS["blend"](frames, 1, 4, cyclic=False)]
    # A change this large is no scene cut to svdrender: minterpolate's cut detection would repeat frames here.
    assert looped == pytest.approx([100, 125, 150, 175, 200, 175, 150, 125], abs=2)
    assert held == pytest.approx([100, 125, 150, 175, 200, 200, 200, 200], abs=2)


def test_an_ffmpeg_failure_is_a_job_error_with_its_reason():
    with pytest.raises(JobError, match=r"^interpolation 'bogus' to 14 fps failed: ffmpeg: .*Undefined constant .*'warp'"):
        Interpolator("bogus", "", "warp")(bar_clip(3), 7, 14, cyclic=False)


# --- through the real CLI ------------------------------------------------------------------------------------------

RECIPE = """
version: 1
model: builtin:tiny
output: {dir: out, formats: [mp4, frames, gif, webp]}
defaults: {width: 64, height: 64, num_frames: 8, num_inference_steps: 2, decode_chunk_size: null, fps: 7}
items:
  - {name: plain, image: inputs/coffee.jpg}
  - {name: pingpong, image: inputs/coffee.jpg, loop: pingpong}
  - {name: crossfade, image: inputs/coffee.jpg, loop: crossfade, crossfade_frames: 2}
  - {name: smooth, image: inputs/coffee.jpg, output_fps: 24, interpolation: mci}
  - {name: smoothloop, image: inputs/coffee.jpg, loop: pingpong, output_fps: 24, interpolation: blend}
  - {name: retimed, image: inputs/coffee.jpg, output_fps: 14}
"""
# item → (frames in the files, their frame rate): every job renders the same 8 model frames (same image and seed).
EXPECTED = {"plain": (8, 7), "pingpong": (14, 7), "crossfade": (6, 7), "smooth": (27, 24), "smoothloop": (48, 24),
            "retimed": (8, 14)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The recipe rendered once through the real CLI; returns its folder (recipe.yaml, out/)."""
    base = tmp_path_factory.mktemp("motion")
    shutil.copytree(INPUTS, base / "inputs")
    (base / "recipe.yaml").write_text(textwrap.dedent(RECIPE).lstrip(), encoding="utf-8")
    proc = run_cli(base / "recipe.yaml", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("6 ok;")
    return base


def ffprobe(path) -> tuple[int, str]:
    out = subprocess.run([shutil.which("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=r_frame_rate,nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    return int(stream["nb_read_frames"]), stream["r_frame_rate"]


def webp_durations(path) -> list[int]:
    """Milliseconds of each frame of an animated WebP, read from its ANMF chunks."""
    data = path.read_bytes()
    durations, pos = [], 12  # after "RIFF", the size, "WEBP"
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"ANMF":  # X, Y, width - 1, height - 1, duration: 24 bits each
            durations.append(int.from_bytes(data[pos + 20:pos + 23], "little"))
        pos += 8 + size + (size & 1)
    return durations


def png_frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("frame-*.png"))])


def job(base, item: str):
    return base / "out" / item / "euler" / "seed-0"


@pytest.mark.parametrize("item", list(EXPECTED))
def test_every_format_holds_the_looped_and_retimed_frames(rendered, item):
    count, fps = EXPECTED[item]
    stem = job(rendered, item)
    assert ffprobe(stem.with_suffix(".mp4")) == (count, f"{fps}/1")
    assert ffprobe(stem.with_suffix(".gif"))[0] == count
    # libwebp merges repeated frames into longer ones: the animation's length counts.
    assert sum(webp_durations(stem.with_suffix(".webp"))) == pytest.approx(1000 * count / fps, abs=count)
    assert len(list(stem.glob("frame-*.png"))) == count
    sidecar = load_json(stem.with_suffix(".json"))
    jsonschema.validate(sidecar, load_json(REPO / "schemas" / "manifest.schema.json"))
    assert (sidecar["frame_count"], sidecar["fps"], sidecar["motion"]["model_frames"]) == (count, fps, 8)
    assert sidecar["settings"]["num_frames"] == 8 and sidecar["settings"]["fps"] == 7
    assert ("minterpolate" in (sidecar["motion"]["filter"] or "")) == item.startswith("smooth")


def test_pingpong_plays_the_frames_forward_then_backward(rendered):
    plain = png_frames(job(rendered, "plain"))
    pingpong = png_frames(job(rendered, "pingpong"))
    assert np.array_equal(pingpong[:8], plain)
    assert np.array_equal(pingpong[8:], plain[6:0:-1])
    assert not np.array_equal(plain[0], plain[7])  # the model's frames differ, so the order above is checked


def test_crossfade_blends_the_last_frames_into_the_first(rendered):
    plain = png_frames(job(rendered, "plain")).astype(int)
    faded = png_frames(job(rendered, "crossfade")).astype(int)
    assert np.array_equal(faded[2:], plain[2:6])
    for i in range(2):
        weight = (i + 1) / 3
        assert np.abs(faded[i] - ((1 - weight) * plain[6 + i] + weight * plain[i])).max() <= 1


def test_interpolated_frames_keep_the_models_frames_where_times_coincide(rendered):
    plain = png_frames(job(rendered, "plain")).astype(int)
    for item in ("smooth", "smoothloop"):
        smooth = png_frames(job(rendered, item)).astype(int)
        # At 24 fps, output frame 24 is at 1 s: model frame 7 of 8 at 7 fps.
        assert np.abs(smooth[0] - plain[0]).max() <= 3 and np.abs(smooth[24] - plain[7]).max() <= 3, item


def test_a_rerun_resumes_and_a_changed_loop_or_rate_renders_again(rendered, tmp_path):
    shutil.copytree(rendered, tmp_path, dirs_exist_ok=True)
    recipe = tmp_path / "recipe.yaml"
    text = recipe.read_text(encoding="utf-8")
    text = text.replace("name: plain, image: inputs/coffee.jpg}", "name: plain, image: inputs/coffee.jpg, "
                                                                  "crossfade_frames: 3}")  # no crossfade: no change
    text = text.replace("loop: pingpong}", "loop: none}").replace("output_fps: 14}", "output_fps: 12}")
    recipe.write_text(text, encoding="utf-8")
    plan = run_cli("plan", recipe, "--json")
    reasons = {j["item"]: j["skip"] or j["render_reason"] for j in json.loads(plan.stdout)["jobs"]}
    done = "done: same settings, files intact"
    assert reasons == {"plain": done, "pingpong": "changed: loop", "crossfade": done, "smooth": done,
                       "smoothloop": done, "retimed": "changed: output_fps"}

    again = run_cli(recipe, "--quiet")
    assert again.stdout.strip().splitlines()[-1].startswith("2 ok, 4 skipped;"), again.stdout + again.stderr
    assert ffprobe(job(tmp_path, "pingpong").with_suffix(".mp4")) == (8, "7/1")
    assert ffprobe(job(tmp_path, "retimed").with_suffix(".mp4")) == (8, "12/1")


def test_bad_loop_and_rate_settings_are_refused_at_their_lines(tmp_path):
    shutil.copytree(INPUTS, tmp_path / "inputs")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(textwrap.dedent("""\
        version: 1
        model: builtin:tiny
        output: {dir: out}
        defaults: {num_frames: 8, output_fps: 0}
        presets:
          p: {scheduler: euler, loop: spiral, interpolation: rife, output_fps: 1000000}
        items:
          - {name: a, image: inputs/coffee.jpg, presets: [p, euler], output_fps: -3}
          - {name: b, image: inputs/coffee.jpg, output_fps: 5, interpolation: mci}
          - {name: c, image: inputs/coffee.jpg, interpolation: blend}
          - {name: d, image: inputs/coffee.jpg, loop: crossfade, crossfade_frames: 5}
          - {name: e, image: inputs/coffee.jpg, loop: pingpong, num_frames: 256, fps: 1, output_fps: 240,
             interpolation: mci}
          - {name: f, image: inputs/coffee.jpg, output_fps: 24.0, loop: yes}
        """), encoding="utf-8")
    proc = run_cli("validate", recipe)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    where = str(recipe)
    assert proc.stderr.splitlines() == [
        f"{where}:4:39: $.defaults.output_fps: 0 is out of range: must be at least 1",
        f"{where}:6:31: $.presets.p.loop: 'spiral' is not one of 'none', 'pingpong', 'crossfade'",
        f"{where}:6:54: $.presets.p.interpolation: 'rife' is not one of 'none', 'duplicate', 'blend', 'mci'",
        f"{where}:6:72: $.presets.p.output_fps: 1000000 is out of range: must be at most 240",
        f"{where}:8:74: $.items[0].output_fps: -3 is out of range: must be at least 1",
        f"{where}:9:53: $.items[1].output_fps: output_fps 5 is below fps 7 for b/euler: interpolation 'mci' only "
        "adds frames; raise output_fps, or set interpolation: none to play the frames slower",
        f"{where}:10:56: $.items[2].interpolation: interpolation 'blend' has nothing to do for c/euler: output_fps "
        "is 7, the same as fps; set output_fps above fps (e.g. 24), or leave interpolation out",
        f"{where}:11:76: $.items[3].crossfade_frames: crossfade_frames 5 blends that many frames from each end, so "
        "it needs num_frames of at least 10, but d/euler has 8; lower crossfade_frames to at most 4",
        f"{where}:12:94: $.items[4].output_fps: e/euler would write 122,400 frames (256 from the model, loop "
        f"pingpong, interpolation mci to 240 fps), more than the {MAX_OUTPUT_FRAMES:,} a job may write; lower "
        "output_fps or num_frames",
        f"{where}:14:53: $.items[5].output_fps: expected integer or null, got a number 24.0",
        f"{where}:14:65: $.items[5].loop: True is not one of 'none', 'pingpong', 'crossfade' (YAML reads unquoted "
        "yes as true; quote it as \"yes\" if you meant text)",
        "11 problems found.",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "inputs"]  # nothing written
