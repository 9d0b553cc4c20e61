"""engine: one load for many jobs, frames equal to a direct pipeline call, and the real model-loading paths."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE
from renderer.engine import Engine, load_pipeline
from renderer.errors import ImageError, ModelUnavailableError
from renderer.images import fit_image, load_image
from renderer.plan import make_plan
from renderer.speed.profiles import PerformanceRequest
from renderer.recipe import ModelSpec, load_recipe
from renderer.builtin_models import build_tiny_pipeline

RECIPE_3 = TINY_RECIPE.replace("items:", "presets:\n  sde: {scheduler: dpmpp_2m_sde_karras}\nitems:").replace(
    "    image: inputs/coffee.jpg", "    image: inputs/coffee.jpg\n    seeds: [1, 2]\n    presets: [euler, sde]")


@pytest.fixture(scope="module")
def tiny_engine():
    engine = Engine(ModelSpec("builtin:tiny"), device="cpu")
    engine.load()
    return engine


def test_one_load_for_many_jobs(write_recipe, tiny_engine, monkeypatch):
    import renderer.builtin_models

    calls = []
    real = renderer.builtin_models.build_tiny_pipeline
    monkeypatch.setattr(renderer.builtin_models, "build_tiny_pipeline", lambda *a: calls.append(1) or real(*a))
    engine = Engine(ModelSpec("builtin:tiny"), device="cpu")
    plan = make_plan(load_recipe(write_recipe(RECIPE_3)))
    assert len(plan.jobs) == 4
    for job in plan.jobs:
        engine.render(job)
    assert (len(calls), engine.loads) == (1, 1)


def test_job_frames_equal_a_direct_pipeline_call(write_recipe, tiny_engine):
    job = make_plan(load_recipe(write_recipe(TINY_RECIPE))).jobs[0]
    ours = tiny_engine.render(job).frames

    pipe = build_tiny_pipeline()
    s = job.settings
    image = fit_image(load_image(job.image), s.width, s.height, s.fit)
    direct = pipe(image, height=s.height, width=s.width, num_frames=s.num_frames,
                  num_inference_steps=s.num_inference_steps, fps=s.fps, motion_bucket_id=s.motion_bucket_id,
                  noise_aug_strength=s.noise_aug_strength, min_guidance_scale=s.min_guidance_scale,
                  max_guidance_scale=s.max_guidance_scale, decode_chunk_size=s.decode_chunk_size,
                  generator=torch.Generator().manual_seed(job.seed), output_type="np").frames[0]
    direct = (direct * 255).round().astype(np.uint8)
    assert ours.shape == (s.num_frames, s.height, s.width, 3)
    assert np.array_equal(ours, direct)


def test_frames_do_not_depend_on_order_or_global_rng(write_recipe, tiny_engine):
    jobs = make_plan(load_recipe(write_recipe(RECIPE_3))).jobs
    first = {j.id: hashlib.sha256(tiny_engine.render(j).frames.tobytes()).hexdigest() for j in jobs}
    torch.manual_seed(12345)
    torch.randn(1000)
    again = {j.id: hashlib.sha256(tiny_engine.render(j).frames.tobytes()).hexdigest() for j in reversed(jobs)}
    assert first == again
    assert len(set(first.values())) == 4  # seeds and presets really change the frames


def test_a_prefetched_input_renders_the_same_frames_and_keeps_its_errors(write_recipe, tiny_engine):
    jobs = make_plan(load_recipe(write_recipe(RECIPE_3))).jobs
    # An Euler job and an SDE one, whose steps draw noise from the job's generator after the initial latents.
    picked = [next(j for j in jobs if j.preset == name) for name in ("euler", "sde")]
    for job in picked:
        direct = tiny_engine.render(job).frames
        used = tiny_engine.clip_input.used
        tiny_engine.prefetch(job)
        # The prefetch thread also prepared the CLIP input (diffusers' resize) and drew the initial latents, and
        # the pipeline used them: same frames.
        assert np.array_equal(tiny_engine.render(job).frames, direct), job.id
        assert tiny_engine.clip_input.used == used + 1
    # A file broken after planning fails its own job, when it renders, with the image error.
    Path(jobs[2].image).write_bytes(b"not an image")
    tiny_engine.prefetch(jobs[2])
    with pytest.raises(ImageError, match="coffee"):
        tiny_engine.render(jobs[2])
    assert not tiny_engine._prefetched


def test_prefetched_draws_are_the_pipelines_own(write_recipe, tiny_engine):
    from diffusers.utils.torch_utils import randn_tensor

    job = make_plan(load_recipe(write_recipe(TINY_RECIPE))).jobs[0]
    s, pipe = job.settings, tiny_engine.pipe
    latents, after = tiny_engine._initial_draws(job)
    # What the pipeline draws from the job's generator before its first step: the conditioning noise, then latents.
    generator = torch.Generator().manual_seed(job.seed)
    image = pipe.video_processor.preprocess(fit_image(load_image(job.image), s.width, s.height, s.fit),
                                            height=s.height, width=s.width)
    randn_tensor(image.shape, generator=generator, dtype=image.dtype)
    expected = pipe.prepare_latents(1, s.num_frames, pipe.unet.config.in_channels, s.height, s.width,
                                    next(pipe.image_encoder.parameters()).dtype, "cpu", generator)
    assert torch.equal(latents * pipe.scheduler.init_noise_sigma, expected)
    assert torch.equal(after.get_state(), generator.get_state())


def _save_tiny(folder: Path) -> None:
    build_tiny_pipeline().save_pretrained(folder)


def test_loads_a_local_folder(tmp_path):
    _save_tiny(tmp_path / "svd-local")
    pipe, info = load_pipeline(ModelSpec(str(tmp_path / "svd-local")), "cpu", tmp_path)
    assert (info.resolved_revision, info.dtype) == ("local", "float32")
    reference = build_tiny_pipeline()
    assert torch.equal(pipe.unet.conv_in.weight, reference.unet.conv_in.weight)


def test_loads_from_a_hub_cache_layout_offline(tmp_path, monkeypatch):
    """The hub code path (repo id + revision + variant + dtype) against a real cache layout, HF_HUB_OFFLINE=1."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--svd-tiny"
    snapshot = repo / "snapshots" / commit
    build_tiny_pipeline().save_pretrained(snapshot, variant="fp16")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pipe, info = load_pipeline(ModelSpec("acme/svd-tiny", revision="main", variant="fp16", dtype="bfloat16"), "cpu",
                               tmp_path)
    assert info.resolved_revision == commit
    assert info.dtype == "bfloat16" and pipe.unet.dtype == torch.bfloat16


def test_model_missing_offline_is_one_clear_sentence(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        load_pipeline(ModelSpec("acme/not-cached"), "cpu", tmp_path)
    message = str(info.value)
    assert message.startswith("model 'acme/not-cached' revision 'main' is not in the local Hugging Face cache (")
    assert message.endswith("and HF_HUB_OFFLINE=1 forbids downloading it: download it once where there is network "
                            "(`hf download acme/not-cached`), or set model.id to a local folder")
    assert "\n" not in message


def test_not_a_model_id(tmp_path):
    with pytest.raises(ModelUnavailableError, match="is neither a local folder"):
        load_pipeline(ModelSpec("no such thing"), "cpu", tmp_path)


def test_performance_profiles_are_plain_float32_on_a_cpu(write_recipe, tiny_engine):
    """On a CPU every profile resolves to plain float32 diffusers (nothing there speeds up the CPU path), so a job's
    frames are the same under --profile fast; the sidecar records what was applied. GPU numbers: performance.md."""
    job = make_plan(load_recipe(write_recipe(TINY_RECIPE))).jobs[0]
    fast = Engine(ModelSpec("builtin:tiny"), device="cpu", performance=PerformanceRequest(profile="fast", compile=True),
                  jobs=[job] * 10)
    frames = fast.render(job).frames
    assert fast.performance.profile == "off" and fast.performance.applied == ()
    assert fast.info.dtype == "float32"
    assert np.array_equal(frames, tiny_engine.render(job).frames)


def test_recipe_performance_section_and_its_errors(write_recipe):
    from renderer.errors import RecipeError

    recipe = load_recipe(write_recipe(TINY_RECIPE + "performance: {profile: low, compile: false}\n"))
    assert recipe.performance == PerformanceRequest(profile="low", compile=False)
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(TINY_RECIPE + "performance: {profile: turbo}\n"))
    assert str(info.value).endswith("$.performance.profile: 'turbo' is not one of 'auto', 'fast', 'balanced', "
                                    "'low', 'off'")


def test_two_renders_in_two_threads_give_the_sequential_frames(write_recipe, tmp_path):
    """Two renderer.render() calls started together in two threads (two output folders) each build builtin:tiny;
    with the weights drawn from the build's own generator, both give the frames of a sequential run."""
    import threading

    import renderer

    path = write_recipe(RECIPE_3)

    def hashes(results):
        return {r.id: r.sidecar["frames_sha256"] for r in results}

    sequential = hashes(renderer.render(path, out=tmp_path / "sequential", device="cpu", quiet=True))
    found: dict[str, dict] = {}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        start.wait()
        found[name] = hashes(renderer.render(path, out=tmp_path / name, device="cpu", quiet=True))

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(sequential.values())) == 4
    assert found == {"a": sequential, "b": sequential}


def test_builtin_weights_ignore_the_global_rng():
    torch.manual_seed(1)
    first = build_tiny_pipeline().unet.conv_in.weight.clone()
    torch.manual_seed(2)
    assert torch.equal(build_tiny_pipeline().unet.conv_in.weight, first)
