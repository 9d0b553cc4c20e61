"""--smoke: every job of a real recipe on builtin:tiny at a tiny size, into OUTPUT_DIR-smoke, marked as a smoke run;
the real output folder is never touched. Speed: benchmarks/smoke_speed.py (no timed test)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import yaml

from conftest import REPO, RECIPES, cli_env
from renderer.plan import plan_recipe
from renderer.smoke import SMOKE_SETTINGS

WORKFLOW = REPO / "examples" / "ci" / "nightly.yml"


def _product_shots(tmp_path):
    """recipes/product_shots.yaml as shipped (its hub model, 1024x576, 25 frames), next to the example inputs."""
    shutil.copytree(RECIPES / "inputs", tmp_path / "inputs")
    path = tmp_path / "product_shots.yaml"
    path.write_text((RECIPES / "product_shots.yaml").read_text().replace("../renders/product_shots", "renders/ps"))
    return path


def test_smoke_plan_keeps_every_job_and_shrinks_each(tmp_path):
    path = _product_shots(tmp_path)
    real = plan_recipe(path)
    smoke = plan_recipe(path, smoke=True)
    assert [j.id for j in smoke.jobs] == [j.id for j in real.jobs] and len(smoke.jobs) == 6
    assert smoke.recipe.model.id == "builtin:tiny" and smoke.recipe.smoke and not real.recipe.smoke
    assert smoke.recipe.output_dir == tmp_path / "renders" / "ps-smoke"
    for job, original in zip(smoke.jobs, real.jobs):
        s = job.settings
        assert tuple(getattr(s, k) for k, _ in SMOKE_SETTINGS) == tuple(v for _, v in SMOKE_SETTINGS)
        assert (s.width, s.num_frames, s.crossfade_frames) == (64, 4, 2)
        assert job.scheduler.preset == original.scheduler.preset  # presets keep their samplers
        assert s.motion_bucket_id == original.settings.motion_bucket_id  # other item settings stay
        assert str(job.sidecar).startswith(str(smoke.recipe.output_dir))


def test_the_workflow_smoke_job_renders_every_job_of_product_shots(tmp_path):
    """The example workflow's smoke step, run as written by bash, through the real CLI."""
    path = _product_shots(tmp_path)
    real_out = tmp_path / "renders" / "nightly"
    real_out.mkdir(parents=True)
    (real_out / "keep.txt").write_text("a finished render")
    step = next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["smoke"]["steps"]
                if s.get("name") == "Smoke-render every job of the recipe")
    assert "--smoke" in step["run"] and "builtin:tiny" not in step["run"]
    env = cli_env(RECIPE=str(path), OUT=str(real_out), **step.get("env", {}),
                  PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"6 ok; manifest: {tmp_path / 'renders' / 'nightly-smoke' / 'manifest.json'}"
    assert sorted(p.name for p in real_out.iterdir()) == ["keep.txt"]  # the real output folder is untouched
    manifest = json.loads((tmp_path / "renders" / "nightly-smoke" / "manifest.json").read_text())
    assert manifest["run"]["smoke"] is True and manifest["counts"] == {"ok": 6}
    for job in manifest["jobs"]:
        sidecar = json.loads((tmp_path / "renders" / "nightly-smoke" / (job["job_id"] + ".json")).read_text())
        assert sidecar["smoke"] is True and sidecar["model"]["id"] == "builtin:tiny"
        assert (sidecar["frame_count"], sidecar["width"], sidecar["height"]) == (4, 64, 64)


def test_plan_smoke_and_the_model_option_refused(tmp_path):
    from click.testing import CliRunner

    from renderer.cli import main

    path = _product_shots(tmp_path)
    shown = CliRunner().invoke(main, ["plan", str(path), "--smoke"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == (f"product_shots: 6 jobs (6 to render), model builtin:tiny, output "
                                            f"{tmp_path / 'renders' / 'ps-smoke'}")
    for command in (["plan", str(path)], [str(path)]):
        refused = CliRunner().invoke(main, [*command, "--smoke", "--model", "acme/svd"])
        assert refused.exit_code == 2
        assert refused.output == "svdrender: --smoke renders on builtin:tiny; leave out --model\n"


def test_ladder_presets_smoke_at_the_fewest_steps_they_take(tmp_path):
    # draft / quick / fine refuse fewer than 3 steps: a smoke run of a recipe using them must still plan every job.
    shutil.copytree(RECIPES / "inputs", tmp_path / "inputs")
    path = tmp_path / "ladder.yaml"
    path.write_text("version: 1\nmodel: stabilityai/stable-video-diffusion-img2vid-xt\n"
                    "presets: {final: {scheduler: fine, motion_bucket_id: 90}}\n"
                    "items:\n  - {image: inputs/coffee.jpg, presets: [draft, quick, final, euler]}\n")
    smoke = plan_recipe(path, smoke=True)
    assert [(j.preset, j.settings.num_inference_steps) for j in smoke.jobs] == [
        ("draft", 3), ("quick", 3), ("final", 3), ("euler", 2)]
    assert smoke.jobs[2].settings.motion_bucket_id == 90
