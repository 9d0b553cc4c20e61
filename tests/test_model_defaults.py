"""Model-aware defaults: a model setting the recipe leaves out comes from the model's unet/config.json (a local folder,
the Hugging Face cache, a built-in model's data), else its known family, else svdrender's default; `plan` says which,
and `validate` and `render` warn, at the recipe line, about values the model was not trained for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import INPUTS, cli_env, load_json, run_cli
from renderer.cli import main
from renderer.plan import plan_json, plan_recipe

SVD = "stabilityai/stable-video-diffusion-img2vid"
XT = "stabilityai/stable-video-diffusion-img2vid-xt"
XT_1_1 = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
CONFIG = "from the model's unet/config.json"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path, monkeypatch):
    """huggingface_hub reads HF_HUB_CACHE once, when first imported: point it at an empty folder here too, so that a
    model in the user's own cache never answers for the family table."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


def recipe(model: str, defaults: str = "", item: str = "") -> str:
    """A one-item recipe for `model`; `defaults` and `item` are extra YAML lines (line 4 and line 8 onwards)."""
    return (f"version: 1\nmodel: {model}\noutput: {{dir: out}}\ndefaults: {{width: 64, height: 64, "
            f"num_inference_steps: 2{', ' + defaults if defaults else ''}}}\nitems:\n  - name: coffee\n"
            f"    image: inputs/coffee.jpg\n" + "".join(f"    {line}\n" for line in item.splitlines()))


def invoke(*args) -> tuple[int, str, str]:
    """The real command in-process (the process boundary is not what these tests are about)."""
    result = CliRunner().invoke(main, [*map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def model_folder(root: Path, unet_config: bytes | None) -> Path:
    """A local model folder holding only JSON configs (enough for validate and plan)."""
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
    if unet_config is not None:
        (root / "unet" / "config.json").write_bytes(unet_config)
    return root


def hub_cache(cache: Path, repo: str, commits: dict[str, int]) -> None:
    """The Hugging Face cache layout of `repo` (real folders, no server): per ref, a snapshot whose unet/config.json
    says num_frames."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    for index, (ref, frames) in enumerate(commits.items()):
        commit = COMMIT[:-1] + str(index)
        (folder / "refs" / ref).write_text(commit)
        snapshot = folder / "snapshots" / commit
        (snapshot / "unet").mkdir(parents=True)
        (snapshot / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
        (snapshot / "unet" / "config.json").write_text(json.dumps({"num_frames": frames}))


@pytest.mark.parametrize("model, frames, source", [
    ("builtin:tiny", 8, CONFIG),
    ("builtin:tiny-14", 14, CONFIG),
    ("builtin:svd-xt-random", 25, CONFIG),
    (SVD, 14, "known family: SVD"),
    (XT, 25, "known family: SVD-XT"),
    (XT_1_1, 25, "known family: SVD-XT 1.1"),
    ("acme/svd-finetune", 25, "svdrender default"),
])
def test_num_frames_comes_from_the_config_then_the_family_then_svdrender(write_recipe, model, frames, source):
    plan = plan_recipe(write_recipe(recipe(model)))
    job = plan_json(plan)["jobs"][0]
    assert job["settings"]["num_frames"] == frames
    assert job["setting_sources"]["num_frames"] == source
    fixed = "known family: SVD-XT 1.1" if model == XT_1_1 else "svdrender default"
    assert job["setting_sources"]["fps"] == job["setting_sources"]["motion_bucket_id"] == fixed
    assert (job["settings"]["fps"], job["settings"]["motion_bucket_id"]) == (7, 127)


def test_plan_names_where_each_value_came_from(write_recipe):
    path = write_recipe(recipe("builtin:tiny-14", "fps: 9", "num_frames: 6\nseeds: [0, 1]")
                        + "  - name: rocket\n    image: inputs/rocket.jpg\n")
    code, out, err = invoke("plan", path)
    assert (code, err) == (0, "")
    assert out.splitlines()[-5:] == [
        "settings that depend on the model, and where each value came from:",
        "  num_frames 6 (recipe line 8) for 2 jobs",
        "  num_frames 14 (from the model's unet/config.json) for 1 job",
        "  fps 9 (recipe line 4)",
        "  motion_bucket_id 127 (svdrender default)",
    ]
    assert "rocket/euler/seed-0  render  64x64 14f 2 steps euler" in out


def test_a_smoke_plan_names_its_own_settings_and_the_tiny_models(write_recipe):
    code, out, _ = invoke("plan", "--smoke", write_recipe(recipe(XT_1_1, "fps: 9")))
    assert code == 0
    assert out.splitlines()[-3:] == ["  num_frames 4 (--smoke)", "  fps 9 (recipe line 4)",
                                     "  motion_bucket_id 127 (svdrender default)"]


def test_the_model_option_is_honoured_like_the_recipes_model(write_recipe):
    path = write_recipe(recipe("builtin:tiny"))
    plans = {model: json.loads(invoke("plan", "--json", "--model", model, path)[1])
             for model in (SVD, "builtin:tiny-14", "builtin:tiny")}
    assert {m: (p["jobs"][0]["settings"]["num_frames"], p["jobs"][0]["setting_sources"]["num_frames"])
            for m, p in plans.items()} == {SVD: (14, "known family: SVD"), "builtin:tiny-14": (14, CONFIG),
                                           "builtin:tiny": (8, CONFIG)}
    # The resolved frame count is in the cache key: changing the model changes the jobs.
    assert len({p["jobs"][0]["cache_key"] for p in plans.values()}) == 3


def test_a_local_folders_config_decides(write_recipe, tmp_path):
    model_folder(tmp_path / "models" / "svd", json.dumps({"num_frames": 16}).encode())
    code, out, err = invoke("plan", "--json", write_recipe(recipe("models/svd")))
    plan = json.loads(out)
    assert (code, err) == (0, "")
    assert plan["model_defaults"]["config"] == str(tmp_path / "models" / "svd" / "unet" / "config.json")
    assert (plan["jobs"][0]["settings"]["num_frames"], plan["jobs"][0]["setting_sources"]["num_frames"]) == (16, CONFIG)


def test_the_hub_caches_config_beats_the_family_table_through_the_real_cli(write_recipe, tmp_path):
    # SVD's family says 14; the config in the cache, at the recipe's revision, says otherwise and wins. Nothing is
    # downloaded: HF_HUB_OFFLINE=1, and the cache is a folder on disk.
    hub_cache(tmp_path / "hub", SVD, {"main": 16, "v2": 20})
    path = write_recipe(recipe(SVD))
    write_recipe(recipe(f"{{id: {SVD}, revision: v2}}"), "v2.yaml")
    env = cli_env(HF_HUB_CACHE=str(tmp_path / "hub"))
    proc = run_cli("plan", path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "  num_frames 16 (from the model's unet/config.json)\n" in proc.stdout
    assert "coffee/euler/seed-0  render  64x64 16f" in proc.stdout
    v2 = json.loads(run_cli("plan", "--json", tmp_path / "v2.yaml", env=env).stdout)
    assert v2["jobs"][0]["settings"]["num_frames"] == 20
    assert v2["model_defaults"]["config"].endswith(f"snapshots/{COMMIT[:-1]}1/unet/config.json")
    # Without the cache, the family table answers.
    assert "  num_frames 14 (known family: SVD)\n" in run_cli("plan", path).stdout


def test_fixed_conditioning_warns_at_the_recipe_line_and_stays_valid(write_recipe):
    path = write_recipe(recipe(XT_1_1, "fps: 8", "motion_bucket_id: 180\nseeds: [0, 1]"))
    fps = (f"{path}:4:64: $.defaults.fps: warning: SVD-XT 1.1 was fine-tuned with fps fixed at 7 (the model sees "
           "fps - 1 = 6, its card's \"6 FPS\"); 8 renders, but was not trained for: expect less consistent videos, or "
           "leave fps out")
    motion = (f"{path}:8:23: $.items[0].motion_bucket_id: warning: SVD-XT 1.1 was fine-tuned with motion_bucket_id "
              "fixed at 127; 180 renders, but was not trained for: expect less consistent videos, or leave "
              "motion_bucket_id out")
    assert invoke("validate", path) == (0, f"{path}: ok (1 item, 2 jobs, 2 warnings)\n", f"{fps}\n{motion}\n")
    assert invoke("validate", "--quiet", path) == (0, "", f"{fps}\n{motion}\n")
    code, out, err = invoke("plan", "--json", path)
    assert (code, err) == (0, f"{fps}\n{motion}\n")
    assert json.loads(out)["warnings"] == [fps, motion]
    # Leaving them out gives the values the model was tuned with, and no warning.
    assert invoke("validate", write_recipe(recipe(XT_1_1), "quiet.yaml"))[2] == ""


def test_more_frames_than_trained_warns_fewer_do_not(write_recipe):
    more = write_recipe(recipe(SVD, "num_frames: 25"))
    assert invoke("validate", more)[:2] == (0, f"{more}: ok (1 item, 1 job, 1 warning)\n")
    assert invoke("validate", more)[2] == (
        f"{more}:4:71: $.defaults.num_frames: warning: num_frames 25 is more than the 14 frames the model was "
        "trained for (known family: SVD); frames past 14 usually degrade: leave num_frames out to render 14\n")
    assert invoke("validate", write_recipe(recipe(XT, "num_frames: 14"), "fewer.yaml"))[2] == ""


def test_an_unknown_hub_model_not_cached_yet_says_its_frame_count_is_a_guess(write_recipe):
    path = write_recipe(recipe("acme/svd-finetune"))
    assert invoke("validate", path)[2] == (
        f"{path}:2:8: $.model: warning: model acme/svd-finetune is not in the local Hugging Face cache and svdrender "
        "does not know its family, so num_frames is svdrender's default, 25; once a render has downloaded it, its "
        "unet/config.json decides, and jobs whose frame count then differs render again: set num_frames, or "
        "`hf download acme/svd-finetune` first\n")
    assert invoke("validate", write_recipe(recipe("acme/svd-finetune", "num_frames: 14"), "set.yaml"))[2] == ""
    code, _, err = invoke("plan", "--model", "acme/svd-finetune", write_recipe(recipe("builtin:tiny"), "tiny.yaml"))
    assert code == 0 and err.startswith(f"{path.parent / 'tiny.yaml'}: warning: --model acme/svd-finetune is not in")


def _deep() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


HOSTILE = {
    "not-json": (b"{num_frames: 14", "this unet config is not JSON (Expecting property name enclosed in double quotes: "
                                     "line 1 column 2 (char 1))"),
    "huge": (b'{"num_frames": 14, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}',
             "this unet config is larger than 1 MiB"),
    "not-utf8": (b'{"num_frames": 14, "x": "\xff"}', "this unet config is not UTF-8 text"),
    "deep": (_deep(), "this unet config is JSON nested too deeply to be a config"),
    "list": (b"[14]", "this unet config is not a JSON object"),
    "negative": (b'{"num_frames": -3}', "num_frames -3 is not a frame count a recipe may ask for (an integer from 1 to "
                                        "256)"),
    "billion": (b'{"num_frames": 1000000000}', "num_frames 1000000000 is not a frame count a recipe may ask for (an "
                                               "integer from 1 to 256)"),
    "text": (b'{"num_frames": "14"}', "num_frames '14' is not a frame count a recipe may ask for (an integer from 1 to "
                                      "256)"),
    "float": (b'{"num_frames": 14.0}', "num_frames 14.0 is not a frame count a recipe may ask for (an integer from 1 "
                                       "to 256)"),
    "nan": (b'{"num_frames": NaN}', "num_frames nan is not a frame count a recipe may ask for (an integer from 1 to "
                                    "256)"),
    "long-value": (b'{"num_frames": [' + b"1, " * 50 + b'1]}', "num_frames [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ... "
                                                                "is not a frame count a recipe may ask for (an integer "
                                                                "from 1 to 256)"),
    "missing": (None, "this unet config cannot be read (No such file or directory)"),
    "fifo": ("fifo", "this unet config is not a regular file"),
    "folder": ("folder", "this unet config is not a regular file"),
    "device": ("/dev/zero", "this unet config is not a regular file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_malformed_or_hostile_unet_config_is_ignored_with_a_warning(write_recipe, tmp_path, case):
    content, why = HOSTILE[case]
    folder = model_folder(tmp_path / "svd", content if isinstance(content, bytes) else None)
    config = folder / "unet" / "config.json"
    if content == "fifo":
        os.mkfifo(config)
    elif content == "folder":
        config.mkdir()
    elif content == "/dev/zero":
        config.symlink_to(content)
    path = write_recipe(recipe("svd"))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for command in ("validate", "plan"):
        code, out, err = invoke(command, path)
        assert code == 0, err
        where = ": $.num_frames" if why.startswith("num_frames") else ""
        assert err == (f"{config}{where}: warning: {why}; ignored: the model's default num_frames is 25 (svdrender "
                       "default)\n")
    assert "  num_frames 25 (svdrender default)" in out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_broken_config_in_the_hub_cache_falls_back_to_the_family(write_recipe, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    hub_cache(tmp_path / "hub", SVD, {"main": 16})
    config = next((tmp_path / "hub").rglob("config.json"))
    config.write_text('{"num_frames": -3}')
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, err = invoke("plan", write_recipe(recipe(SVD)))
    assert code == 0
    assert err == (f"{config}: $.num_frames: warning: num_frames -3 is not a frame count a recipe may ask for (an "
                   "integer from 1 to 256); ignored: the model's default num_frames is 14 (known family: SVD)\n")
    assert "  num_frames 14 (known family: SVD)\n" in out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One real render through the CLI: builtin:tiny-14 with no num_frames (its config's 14) for one item, and 16
    frames, more than it declares, for another with two seeds."""
    root = tmp_path_factory.mktemp("model-defaults")
    shutil.copytree(INPUTS, root / "inputs")
    path = root / "recipe.yaml"
    path.write_text(recipe("builtin:tiny-14", "decode_chunk_size: 4") + "  - name: rocket\n    image: inputs/rocket.jpg\n"
                    "    num_frames: 16\n    seeds: [0, 1]\n")
    proc = run_cli(path)
    return path, proc


def _frames(video: Path) -> int:
    out = subprocess.run([shutil.which("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(video)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_render_uses_the_models_frame_count_and_warns_once(rendered):
    path, proc = rendered
    out = path.parent / "out"
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warning = (f"{path}:10:17: $.items[1].num_frames: warning: num_frames 16 is more than the 14 frames the model was "
               f"trained for ({CONFIG}); frames past 14 usually degrade: leave num_frames out to render 14")
    assert proc.stderr.count("warning:") == 1 and proc.stderr.splitlines()[0] == warning  # once, before any job
    assert _frames(out / "coffee" / "euler" / "seed-0.mp4") == 14
    assert [_frames(out / "rocket" / "euler" / f"seed-{seed}.mp4") for seed in (0, 1)] == [16, 16]
    sidecar = load_json(out / "coffee" / "euler" / "seed-0.json")
    assert (sidecar["frame_count"], sidecar["settings"]["num_frames"]) == (14, 14)


def test_changing_the_model_renders_the_jobs_whose_frame_count_it_changes(rendered):
    path, _ = rendered
    code, out, _ = invoke("plan", path)
    assert code == 0 and out.count("(done: same settings, files intact)") == 3
    code, out, _ = invoke("plan", "--model", "builtin:tiny", path)
    assert "coffee/euler/seed-0  render  64x64 8f 2 steps euler -> coffee/euler/seed-0.mp4 (changed: model, " \
           "num_frames)" in out


def test_the_python_api_prints_a_dict_recipes_warnings_once(tmp_path, capsys):
    import renderer

    shutil.copytree(INPUTS, tmp_path / "inputs")
    recipe_dict = {"version": 1, "model": "builtin:tiny", "output": {"dir": "out"},
                   "defaults": {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2},
                   "items": [{"name": "coffee", "image": "inputs/coffee.jpg", "seeds": [0, 1]}]}
    results = renderer.render(recipe_dict, base_dir=tmp_path, quiet=True, device="cpu")
    assert [r.sidecar["frame_count"] for r in results] == [9, 9]
    assert capsys.readouterr().err.splitlines() == [
        f"<recipe dict>: $.defaults.num_frames: warning: num_frames 9 is more than the 8 frames the model was trained "
        f"for ({CONFIG}); frames past 8 usually degrade: leave num_frames out to render 8"]


def test_a_revision_that_climbs_out_of_refs_is_not_followed(write_recipe, tmp_path, monkeypatch):
    # The cache would read `refs/../../evil` as the file naming the commit: any file, of any size.
    import huggingface_hub.constants as constants

    hub_cache(tmp_path / "hub", SVD, {"main": 16})
    (tmp_path / "hub" / "evil").write_text(COMMIT[:-1] + "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    job = plan_json(plan_recipe(write_recipe(recipe(f"{{id: {SVD}, revision: ../../evil}}"))))["jobs"][0]
    assert (job["settings"]["num_frames"], job["setting_sources"]["num_frames"]) == (14, "known family: SVD")
