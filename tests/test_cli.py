"""End to end through the CLI: the demo renders in a real subprocess, outputs are real videos, manifests validate,
reruns skip, bad recipes exit 2 without loading a model, and the fast commands never import torch (subprocesses).
Renders that test what a command does, not the process boundary, run the same CLI in this process (invoke_cli)."""

import json
import shutil
import subprocess
import sys

import jsonschema
import pytest

from conftest import REPO, TINY_RECIPE, cli_env, invoke_cli, load_json, run_cli

MANIFEST_SCHEMA = jsonschema.Draft202012Validator(load_json(REPO / "schemas" / "manifest.schema.json"))


def ffprobe(path) -> dict:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is missing: install Debian's ffmpeg package (tests/run does)"
    out = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"][0]


def imports_of(*args) -> tuple[subprocess.CompletedProcess, list]:
    """Run the CLI in-process in a fresh interpreter and report which heavy modules it imported."""
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('HEAVY=' + ','.join(m for m in ('torch', 'diffusers', 'transformers') "
            "if m in sys.modules), file=sys.stderr))\n"
            f"sys.argv = ['svdrender'] + {list(map(str, args))!r}\n"
            "from renderer.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True)
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")][-1][6:]
    return proc, [m for m in heavy.split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["validate", "recipes/demo.yaml"], ["plan", "recipes/demo.yaml"],
                                  ["plan", "--json", "recipes/product_shots.yaml"], ["schema"], ["presets"]],
                         ids=lambda a: " ".join(a))
def test_fast_commands_never_import_torch(args):
    proc, heavy = imports_of(*args)
    assert proc.returncode == 0, proc.stderr
    assert heavy == []


def test_demo_renders_real_videos_and_reproduces(tmp_path):
    first = run_cli("recipes/demo.yaml", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    manifest = load_json(tmp_path / "a" / "manifest.json")
    MANIFEST_SCHEMA.validate(manifest)
    assert manifest["counts"] == {"ok": 4}
    assert manifest["run"]["model_loads"] == 1
    for job in manifest["jobs"]:
        sidecar_path = tmp_path / "a" / job["item"] / job["preset"] / f"seed-{job['seed']}.json"
        MANIFEST_SCHEMA.validate(load_json(sidecar_path))
        stream = ffprobe(sidecar_path.with_suffix(".mp4"))
        assert stream == {"codec_name": "h264", "pix_fmt": "yuv420p", "width": 128, "height": 72,
                          "r_frame_rate": "7/1", "nb_read_frames": "8"}
        assert job["frame_count"] == 8 and job["scheduler"]["sigmas"][-1] == 0.0
    # The same frames again in this process: reproducible across processes.
    second = invoke_cli("recipes/demo.yaml", "--out", tmp_path / "b", "--quiet")
    assert second.returncode == 0, second.stderr
    again = load_json(tmp_path / "b" / "manifest.json")
    assert [j["frames_sha256"] for j in again["jobs"]] == [j["frames_sha256"] for j in manifest["jobs"]]

    rerun = invoke_cli("recipes/demo.yaml", "--out", tmp_path / "a")
    assert rerun.returncode == 0
    assert rerun.stdout.strip().splitlines()[-1].startswith("4 skipped;")
    (tmp_path / "a" / "rocket" / "euler" / "seed-0.mp4").write_bytes(b"damaged")
    plan = invoke_cli("plan", "recipes/demo.yaml", "--out", tmp_path / "a")
    assert "rocket/euler/seed-0                render" in plan.stdout
    repair = invoke_cli("recipes/demo.yaml", "--out", tmp_path / "a")
    assert repair.stdout.strip().splitlines()[-1].startswith("1 ok, 3 skipped;")
    assert ffprobe(tmp_path / "a" / "rocket" / "euler" / "seed-0.mp4")["nb_read_frames"] == "8"


def test_broken_recipe_lists_every_error_and_loads_nothing(write_recipe):
    path = write_recipe("""
        version: 1
        model: builtin:tiny
        defaults: {widht: 64, num_frames: 0}
        items:
          - image: inputs/missing.png
            presets: [DDIM]
    """)
    proc, heavy = imports_of(path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("HEAVY=")]
    assert lines[0] == f"{path}:3:12: $.defaults.widht: unknown key 'widht'; did you mean 'width'?"
    assert lines[1] == f"{path}:3:35: $.defaults.num_frames: 0 is out of range: must be at least 1"
    # One pass: the semantic checks (image, preset) report alongside the schema's.
    assert lines[2] == f"{path}:5:12: $.items[0].image: inputs/missing.png: image file not found"
    assert lines[3].startswith(f"{path}:6:15: $.items[0].presets[0]: 'DDIM' is wrong for SVD: ")
    assert lines[-1] == "4 problems found; nothing was rendered."
    assert "Traceback" not in proc.stderr
    assert heavy == []


def test_every_format_and_only(write_recipe, tmp_path):
    path = write_recipe(TINY_RECIPE.replace("output: {dir: out}",
                                            "output: {dir: out, formats: [mp4, webm, gif, webp, frames]}")
                        .replace("image: inputs/coffee.jpg", "image: inputs/coffee.jpg\n    seeds: [0, 1]"))
    proc = invoke_cli(path, "--only", "coffee/euler/seed-1")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / "coffee" / "euler"
    assert sorted(p.name for p in folder.iterdir()) == ["seed-1", "seed-1.gif", "seed-1.json", "seed-1.mp4",
                                                        "seed-1.webm", "seed-1.webp"]
    assert ffprobe(folder / "seed-1.webm")["nb_read_frames"] == "4"
    assert ffprobe(folder / "seed-1.gif")["nb_read_frames"] == "4"
    assert sorted(p.name for p in (folder / "seed-1").iterdir()) == [f"frame-000{i}.png" for i in range(4)]
    assert len(load_json(folder / "seed-1.json")["files"]) == 8
    bad = invoke_cli(path, "--only", "cofee")
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"svdrender: --only 'cofee' matches no job of {path}; did you mean 'coffee'?"


def test_dry_run_renders_nothing(write_recipe, tmp_path):
    proc = run_cli(write_recipe(TINY_RECIPE), "--dry-run")
    assert proc.returncode == 0
    assert "coffee/euler/seed-0  render  64x64 4f 3 steps euler -> coffee/euler/seed-0.mp4" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_sde_preset_is_reproducible_alone_and_in_a_batch(write_recipe, tmp_path):
    text = TINY_RECIPE.replace("image: inputs/coffee.jpg",
                               "image: inputs/coffee.jpg\n    presets: [euler, dpmpp_2m_sde_karras]\n    seeds: [0, 1]")
    path = write_recipe(text)
    batch = invoke_cli(path, "--out", tmp_path / "batch")
    alone = invoke_cli(path, "--out", tmp_path / "alone", "--only", "coffee/dpmpp_2m_sde_karras/seed-1")
    assert batch.returncode == alone.returncode == 0, batch.stderr + alone.stderr
    key = "coffee/dpmpp_2m_sde_karras/seed-1.json"
    assert load_json(tmp_path / "batch" / key)["frames_sha256"] == load_json(tmp_path / "alone" / key)["frames_sha256"]


def test_unavailable_model_is_one_sentence_exit_1(write_recipe):
    path = write_recipe(TINY_RECIPE.replace("model: builtin:tiny", "model: acme/not-cached"))
    proc = invoke_cli(path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "svdrender: model 'acme/not-cached' revision 'main' is not in the local Hugging Face cache" in proc.stderr


def test_python_dash_m_and_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("svdrender, version ")


def test_every_builtin_preset_renders_through_the_cli(write_recipe, tmp_path):
    from renderer import scheduler_presets

    names = sorted(scheduler_presets.PRESETS)
    path = write_recipe(TINY_RECIPE.replace("image: inputs/coffee.jpg",
                                            f"image: inputs/coffee.jpg\n    presets: [{', '.join(names)}]"))
    proc = invoke_cli(path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{len(names)} ok;")
    classes = {load_json(tmp_path / "out" / "coffee" / name / "seed-0.json")["scheduler"]["class"] for name in names}
    assert {"EulerDiscreteScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
            "DPMPP2MScheduler"} <= classes


def test_every_refused_scheduler_is_refused_by_validate(write_recipe):
    from renderer import scheduler_presets

    refused = sorted(scheduler_presets.REFUSED)
    presets = "".join(f"  p{i}: {{scheduler: '{name}'}}\n" for i, name in enumerate(refused))
    path = write_recipe(f"version: 1\npresets:\n{presets}items:\n  - image: inputs/coffee.jpg\n")
    proc = run_cli("validate", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(refused) + 1 and "Traceback" not in proc.stderr
    for i, (name, line) in enumerate(zip(refused, lines)):
        suggestion = scheduler_presets.REFUSED[name].suggestion
        assert line.startswith(f"{path}:{i + 3}:")
        assert f"$.presets.p{i}.scheduler: " in line and f"use '{suggestion}' instead" in line, line
