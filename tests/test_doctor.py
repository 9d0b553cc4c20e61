"""`svdrender doctor [RECIPE]`: one ok/warn/fail line per check, and an exit code that says whether rendering can
work here: verified (0), will fail (1), invalid recipe (2) or could not verify (3). Hub checks run against a real
HTTP server on 127.0.0.1 standing in for the hub (tests/hubserver.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, invoke_cli, run_cli
from hubserver import COMMIT as HUB_COMMIT, GATED, PUBLIC, closed_port_url, hub_url, online  # noqa: F401
from renderer import doctor
from renderer.recipe import ModelSpec

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lines_of(proc) -> dict[str, str]:
    """check name → its whole line."""
    return {line[9:26].strip(): line for line in proc.stdout.splitlines()
            if line.split(" ", 1)[0] in ("ok", "warn", "unknown", "fail")}


def test_builtin_tiny_can_render_here(write_recipe):
    # A fresh interpreter, as a CI step runs it: the imports check imports what rendering needs for the first time.
    proc = run_cli("doctor", write_recipe(TINY_RECIPE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = lines_of(proc)
    for name in ("python", "torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "imageio-ffmpeg",
                 "imports", "memory profile", "hub cache", "offline mode", "recipe", "ffmpeg", "model"):
        assert found[name].startswith("ok  "), found.get(name, f"no {name} line in\n{proc.stdout}")
    assert "cuda" in found or "gpu" in found
    assert found["model"] == "ok       model            builtin:tiny: built in, nothing to download"
    assert found["offline mode"].endswith("on (HF_HUB_OFFLINE=1): models must already be cached")
    assert "encodes mp4" in found["ffmpeg"]
    assert proc.stdout.splitlines()[-1].startswith("0 failed, ")


def test_hub_model_missing_offline_cannot_render(write_recipe):
    proc = invoke_cli("doctor", write_recipe(TINY_RECIPE.replace("model: builtin:tiny", "model: acme/not-cached")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines_of(proc)["model"] == (
        "fail     model            acme/not-cached revision main: not in the local cache, and HF_HUB_OFFLINE=1 "
        "forbids downloading it: download it once where there is network (`hf download acme/not-cached`)")
    assert proc.stdout.splitlines()[-1] == "1 failed, " + proc.stdout.splitlines()[-1].split(", ", 1)[1]
    assert "fix the failed checks before rendering" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_invalid_recipe_exits_2_with_its_problems(write_recipe):
    path = write_recipe(TINY_RECIPE.replace("num_frames: 4", "num_frames: 0"))
    out: list[str] = []
    assert doctor.run_doctor(path, echo=out.append) == 2
    assert f"fail     recipe           {path}: 1 problem(s)" in out
    assert any(line.endswith("$.defaults.num_frames: 0 is out of range: must be at least 1") for line in out)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache folder as `hf download` leaves it, with an SVD-like model_index.json."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = cache / "models--acme--svd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    index = {"_class_name": "StableVideoDiffusionPipeline", "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
             "vae": ["diffusers", "AutoencoderKLTemporalDecoder"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps(index))
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    (snapshot / "vae").mkdir()
    (snapshot / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    (snapshot / "scheduler").mkdir()
    (snapshot / "scheduler" / "scheduler_config.json").write_text("{}")
    return snapshot


def test_cached_hub_model_is_found_without_downloading(hub_cache, tmp_path):
    check = doctor.model_check(ModelSpec(id="acme/svd", variant="fp16"), tmp_path)
    assert str(check) == ("ok       model            acme/svd revision main variant fp16: in the local cache "
                          f"(commit {COMMIT})")


def test_partly_cached_model_names_what_is_missing(hub_cache, tmp_path, monkeypatch, hub_url):
    (hub_cache / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    (hub_cache / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    check = doctor.model_check(ModelSpec(id="acme/svd", variant="fp16"), tmp_path)
    assert check.status == "fail"
    assert check.detail.startswith("acme/svd revision main variant fp16: cached only in part (missing vae (fp16 "
                                   "weights)), and HF_HUB_OFFLINE=1 forbids downloading it")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub_url)
    online = doctor.model_check(ModelSpec(id="acme/svd", variant="fp16"), tmp_path)
    assert online.status == "ok"
    assert online.detail == ("acme/svd revision main variant fp16: cached only in part (missing vae (fp16 weights)); "
                             f"verified on {hub_url} (commit {HUB_COMMIT}), the first render downloads it into "
                             f"{constants.HF_HUB_CACHE}")


def test_local_folder_and_bad_ids(hub_cache, tmp_path):
    local = doctor.model_check(ModelSpec(id="unet"), hub_cache)
    assert (local.status, local.detail) == ("fail", f"local folder {hub_cache / 'unet'}: missing model_index.json")
    folder = doctor.model_check(ModelSpec(id=COMMIT), hub_cache.parent)
    assert (folder.status, folder.detail) == ("ok", f"local folder {hub_cache}: has every component")
    for name in ("not a model!", "acme/not a model", "svd"):
        bad = doctor.model_check(ModelSpec(id=name), tmp_path)
        assert (bad.status, bad.detail) == ("fail", f"'{name}' is neither a local folder (looked in "
                                                    f"{tmp_path / name}) nor a hub id like org/name")
    assert str(doctor.model_check(ModelSpec(id="builtin:huge"), tmp_path)) == (
        "fail     model            unknown built-in model 'builtin:huge'; built-in models are builtin:tiny, "
        "builtin:tiny-14, builtin:svd-xt-random")


def test_known_broken_pair_cached_download():
    broken = doctor.known_conflicts({"diffusers": "0.27.2", "huggingface_hub": "0.26.1"})
    assert [str(c) for c in broken] == [
        "fail     incompatible     diffusers 0.27.2 with huggingface_hub 0.26.1: diffusers < 0.29 imports "
        "huggingface_hub.cached_download, which huggingface_hub 0.26 removed; "
        "fix: pip install -U \"diffusers>=0.29.0\""]
    assert doctor.known_conflicts({"diffusers": "0.27.2", "huggingface_hub": "0.25.2"}) == []
    assert doctor.known_conflicts({"diffusers": "0.29.0", "huggingface_hub": "1.0.0"}) == []


def test_requirement_conflicts_are_reported_like_pip_check():
    requires = {"transformers": ["huggingface-hub<3.0,>=1.31.0", "numpy>=1.17", "torch; extra == 'torch'"],
                "diffusers": ["huggingface-hub>=0.34"]}
    assert doctor.requirement_problems(requires, {"huggingface_hub": "0.36.0", "torch": None}) == [
        "transformers needs huggingface-hub<3.0,>=1.31.0, installed: 0.36.0"]
    assert doctor.requirement_problems(requires, {"huggingface_hub": "1.31.0"}) == []


def test_memory_profile_table():
    assert doctor.memory_profile("cpu", 0.0) == "off (no GPU: float32 on the CPU)"
    assert doctor.memory_profile("NVIDIA H100 80GB HBM3", 79.1).split(" ")[0] in ("fast", "balanced", "low")


def test_online_hub_model_is_verified_on_the_hub(online):
    from huggingface_hub import constants

    check = doctor.model_check(ModelSpec(id=PUBLIC), Path("."))
    assert str(check) == (f"ok       model            acme/svd revision main: not in the local cache; verified on "
                          f"{online} (commit {HUB_COMMIT}), the first render downloads it into "
                          f"{constants.HF_HUB_CACHE}")


def test_gated_model_will_fail_and_says_why(online, write_recipe):
    out: list[str] = []
    code = doctor.run_doctor(write_recipe(TINY_RECIPE.replace("model: builtin:tiny", f"model: {GATED}")),
                             echo=out.append)
    assert code == doctor.EXIT_WILL_FAIL == 1
    assert (f"fail     model            model 'acme/gated' is gated: accept its licence at {online}/acme/gated with "
            "your Hugging Face account, then set HF_TOKEN to a token from https://huggingface.co/settings/tokens or "
            "run `hf auth login`") in out
    assert out[-1].endswith("rendering will fail here: fix the failed checks before rendering")


def test_unreachable_hub_could_not_verify_exit_3(online, monkeypatch, write_recipe):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    out: list[str] = []
    code = doctor.run_doctor(write_recipe(TINY_RECIPE.replace("model: builtin:tiny", f"model: {PUBLIC}")),
                             echo=out.append)
    assert code == doctor.EXIT_UNVERIFIED == 3
    model = next(line for line in out if line.split()[1:2] == ["model"])
    assert model.startswith("unknown  model            cannot reach the Hugging Face hub at http://127.0.0.1:")
    assert out[-1].startswith("0 failed, ")
    assert out[-1].endswith(", 1 could not be verified: rendering may work here, but not everything could be "
                            "verified (offline or the hub unreachable)")
