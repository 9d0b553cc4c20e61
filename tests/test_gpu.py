"""What only a CUDA GPU can show: the `fast` profile's compiled paths and GEGLU kernel against plain diffusers, and
the compile-cache marker `auto` reads. Skipped without CUDA; run on a GPU machine with

    HF_HUB_OFFLINE=1 python -m pytest -m gpu tests/test_gpu.py -q
"""

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE
from renderer.speed import geglu, runtime
from renderer.engine import Engine
from renderer.plan import make_plan
from renderer.speed.profiles import PerformanceRequest, Shape
from renderer.recipe import ModelSpec, load_recipe

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m gpu there)")]

# A job small enough to compile in seconds, large enough for the UNet's real block structure.
GPU_RECIPE = TINY_RECIPE.replace("width: 64", "width: 256").replace("height: 64", "height: 128").replace(
    "num_frames: 4", "num_frames: 8").replace("num_inference_steps: 3", "num_inference_steps: 4")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    import shutil

    from conftest import INPUTS

    folder = tmp_path_factory.mktemp("gpu")
    shutil.copytree(INPUTS, folder / "inputs")
    (folder / "recipe.yaml").write_text(GPU_RECIPE.lstrip("\n"))
    return make_plan(load_recipe(folder / "recipe.yaml")).jobs[0]


@pytest.fixture(scope="module")
def plain_frames(job):
    return Engine(ModelSpec("builtin:tiny"), device="cuda", performance=PerformanceRequest(profile="off")).render(job).frames


def test_geglu_kernel_agrees_with_diffusers_at_the_unets_shapes():
    problem = geglu.triton_unavailable()
    if problem is not None:
        pytest.skip(problem)
    assert geglu.check_kernel() is None
    from diffusers.models.activations import GEGLU

    # SVD-XT's feed-forwards at 1024x576: (tokens, width) per resolution level, the CFG pair of 25 frames.
    gen = torch.Generator("cuda").manual_seed(0)
    for rows, dim in ((2 * 25 * 72 * 128, 320), (2 * 25 * 36 * 64, 640), (2 * 25 * 18 * 32, 1280),
                      (2 * 25 * 9 * 16, 1280)):
        layer = GEGLU(dim, 4 * dim).to("cuda", torch.float16)
        x = torch.randn(rows, dim, device="cuda", dtype=torch.float16, generator=gen)
        with torch.no_grad():
            fused, plain = geglu.FusedGEGLU(layer)(x).float(), layer(x).float()
        # fp16 rounding of values of order 1-10: the product is rounded once instead of twice.
        assert (fused - plain).abs().max().item() <= 2e-2 * max(1.0, plain.abs().max().item())


@pytest.mark.parametrize("regions", [False, True], ids=["whole-unet", "regional"])
def test_fast_frames_stay_within_fp16_tolerance_of_plain_diffusers(job, plain_frames, regions, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("SVDRENDER_CACHE", str(tmp_path))
    engine = Engine(ModelSpec("builtin:tiny"), device="cuda",
                    performance=PerformanceRequest(profile="fast", compile_regions=regions))
    frames = engine.render(job).frames
    applied = " ".join(engine.performance.applied)
    assert ("repeated unet blocks" in applied) == regions and "torch.compile" in applied
    if geglu.triton_unavailable() is None:  # Hopper or newer: the compiled UNet calls the GEGLU kernel
        assert "fused Triton GEGLU projection" in applied
    assert frames.shape == plain_frames.shape
    assert np.abs(frames.astype(int) - plain_frames.astype(int)).max() <= 4  # fp16 rounding, in 1/255 steps
    # The compiled job left the marker that tells a later `auto` the cache is warm for this shape.
    s = job.settings
    assert runtime.is_warm(Shape(s.width, s.height, s.num_frames), runtime.describe_device()[0])
