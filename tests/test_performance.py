"""Performance rewrites change how SVD's layers compute, never what: each is checked against the layer it replaces
on the CPU (the GPU-only kernels fall back to the original code there). Their speed is measured by the benchmarks
in benchmarks/, never here."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from renderer.builtin_models import build_tiny_pipeline
from renderer.errors import UsageError
from renderer.speed import geglu, rewrites, runtime
from renderer.speed.profiles import JobWork, Shape
from renderer.speed.settings import PerformanceSettings, profile_settings, resolve_settings


@pytest.fixture
def unet():
    return build_tiny_pipeline().unet


def unet_inputs(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 8, 8, 16, 16, generator=g), torch.tensor(1.2),
            torch.randn(batch, 1, 32, generator=g), torch.randn(batch, 3, generator=g))


@pytest.mark.parametrize("shape", [(3, 64, 5, 7), (2, 64, 4, 3, 5)], ids=["spatial", "temporal"])
@pytest.mark.parametrize("affine", [True, False])
def test_channel_stats_group_norm_is_group_norm(shape, affine):
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(16, 64, eps=1e-6, affine=affine)
    if affine:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    # A large common offset: group statistics combined from per-channel ones must not cancel catastrophically.
    x = torch.randn(shape) * 3 + 50 + torch.randn(1, 64, *[1] * (len(shape) - 2))
    fast = rewrites.ChannelStatsGroupNorm(norm)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), norm(x), rtol=1e-4, atol=1e-4)
        half = x.to(torch.bfloat16)
        assert fast.to(torch.bfloat16)(half).dtype == torch.bfloat16


def test_rewrites_of_the_fast_profile_keep_the_unet_output(unet):
    # Off CUDA the GEGLU kernel's module computes with torch on the interleaved weights the kernel reads on a GPU,
    # so a wrong rearrangement shows here.
    inputs = unet_inputs(2)
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert rewrites.channel_stats_group_norms(unet) == 37
        assert rewrites.efficient_temporal_attention(unet) == 4  # falls back to SDPA off CUDA
        assert rewrites.single_token_cross_attention(unet) > 0
        assert geglu.fused_geglus(unet) == 12
        rewritten = unet(*inputs, return_dict=False)[0]
        # Applying twice changes nothing more.
        assert (rewrites.channel_stats_group_norms(unet), rewrites.efficient_temporal_attention(unet),
                rewrites.single_token_cross_attention(unet), geglu.fused_geglus(unet)) == (0, 0, 0, 0)
    torch.testing.assert_close(rewritten, reference, rtol=1e-4, atol=1e-4)


def test_efficient_attention_processor_falls_back_off_cuda():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8)
    x = torch.randn(6, 25, 32)
    with torch.no_grad():
        reference = attn(x)
        attn.set_processor(rewrites.EfficientShortAttnProcessor(AttnProcessor2_0()))
        assert torch.equal(attn(x), reference)


def test_one_sample_at_a_time_gives_the_batch_output(unet):
    inputs = unet_inputs(2, seed=1)
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert rewrites.one_sample_at_a_time(unet)
        assert not rewrites.one_sample_at_a_time(unet)
        sample, t, emb, ids = inputs
        tupled = unet(sample, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
        per_sample_t = unet(sample, t.repeat(2), encoder_hidden_states=emb, added_time_ids=ids).sample
    torch.testing.assert_close(tupled, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample_t, reference, rtol=1e-5, atol=1e-5)


def test_profiles_on_a_gpu_and_on_a_cpu():
    fast = profile_settings("fast", "NVIDIA H200", 139.8)
    assert (fast.compile, fast.compile_vae, fast.channel_stats_group_norm, fast.efficient_temporal_attention,
            fast.fused_geglu, fast.fp32_vae_encoder, fast.cross_attention_shortcut) == (True,) * 7
    low = profile_settings("low", "NVIDIA H200", 139.8)
    assert (low.cpu_offload, low.unet_one_sample_at_a_time, low.decode_chunk_size, low.compile) == \
        ("model", True, 4, False)
    balanced = profile_settings("balanced", "NVIDIA H200", 139.8)
    assert balanced.fp32_vae_encoder  # exact: the same float32 encode without the per-job casts
    assert not (balanced.compile or balanced.channel_stats_group_norm or balanced.efficient_temporal_attention
                or balanced.fused_geglu)
    assert profile_settings("auto", "NVIDIA GeForce RTX 4060 Ti", 15.6).profile == "low"
    three_short_jobs = [JobWork(Shape(1024, 576, 25), 25)] * 3
    assert profile_settings("auto", "NVIDIA H200", 139.8, three_short_jobs).profile == "balanced"
    assert profile_settings("auto", "NVIDIA H200", 139.8, three_short_jobs, warm=lambda shape: True).profile == "fast"
    assert profile_settings("fast", "cpu", 0.0) == PerformanceSettings("off", "float32")
    with pytest.raises(UsageError, match=r"unknown performance setting\(s\) cuda_graphs"):
        resolve_settings("fast", "NVIDIA H200", 139.8, cuda_graphs=True)


def test_vae_encoder_in_float32_skips_the_upcast_and_keeps_the_latents():
    from PIL import Image

    pipe = build_tiny_pipeline().to(torch.float16)
    image = Image.fromarray(torch.arange(64 * 64 * 3).reshape(64, 64, 3).remainder(251).to(torch.uint8).numpy())

    def latents():
        return pipe(image, height=64, width=64, num_frames=8, num_inference_steps=2, decode_chunk_size=4,
                    generator=torch.Generator().manual_seed(3), output_type="latent").frames

    reference = latents()  # the pipeline upcasts the whole VAE to float32 to encode, then casts it back
    assert rewrites.vae_encoder_in_float32(pipe.vae)
    assert (pipe.vae.dtype, pipe.vae.decoder.conv_in.weight.dtype) == (torch.float32, torch.float16)
    assert not rewrites.vae_encoder_in_float32(pipe.vae)
    assert torch.equal(latents(), reference)
    assert pipe.vae.decoder.conv_in.weight.dtype == torch.float16  # no cast happened


def test_optimize_pipeline_leaves_a_cpu_pipeline_alone():
    pipe = build_tiny_pipeline()
    settings = profile_settings("fast", "NVIDIA H200", 139.8)
    record = runtime.optimize_pipeline(pipe, settings)
    assert (record.applied, record.skipped) == ((), ("all: pipeline is not on a CUDA device",))


def test_geglu_weights_are_interleaved_in_groups_of_value_then_gate_rows():
    weight = torch.arange(256.0)[:, None].repeat(1, 3)  # row i holds i
    w, b = geglu.interleave_geglu(weight, None)
    # The Triton kernel reads 64 value rows, then their 64 gate rows (value rows 0-127, gate rows 128-255).
    assert w[:, 0].tolist() == [*range(0, 64), *range(128, 192), *range(64, 128), *range(192, 256)]
    assert torch.equal(b, torch.zeros(256))


@pytest.mark.parametrize("bias", [True, False])
def test_fused_geglu_computes_diffusers_geglu(bias):
    from diffusers.models.activations import GEGLU

    torch.manual_seed(0)
    layer = GEGLU(24, 192, bias=bias)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(geglu.FusedGEGLU(layer)(x), layer(x), rtol=1e-5, atol=1e-5)
