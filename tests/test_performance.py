"""Performance rewrites change how SVD's layers compute, never what: each is checked against the layer it replaces
on the CPU (the GPU-only kernels fall back to the original code there). Their speed is measured by the benchmarks
in benchmarks/, never here."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from renderer import performance
from renderer.profiles import JobWork, Shape
from renderer.errors import UsageError
from renderer.builtin_models import build_tiny_pipeline


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
    fast = performance.ChannelStatsGroupNorm(norm)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), norm(x), rtol=1e-4, atol=1e-4)
        half = x.to(torch.bfloat16)
        assert fast.to(torch.bfloat16)(half).dtype == torch.bfloat16


def test_rewrites_of_the_fast_profile_keep_the_unet_output(unet):
    inputs = unet_inputs(2)
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert performance.channel_stats_group_norms(unet) == 37
        assert performance.efficient_temporal_attention(unet) == 4  # falls back to SDPA off CUDA
        assert performance.single_token_cross_attention(unet) > 0
        assert performance.temporal_convs_as_2d(unet) > 0
        rewritten = unet(*inputs, return_dict=False)[0]
        # Applying twice changes nothing more.
        assert (performance.channel_stats_group_norms(unet), performance.efficient_temporal_attention(unet)) == (0, 0)
        assert performance.frame_major_temporal_blocks(unet) == 4  # off CUDA its attention is SDPA on copies
        frame_major = unet(*inputs, return_dict=False)[0]
        assert performance.frame_major_temporal_blocks(unet) == 0
        # 4 spatial blocks' feed-forward norms, 2 norms in each of 4 temporal blocks and their first norm, fused
        # with the spatial block's last add by the 4 transformers (torch's ops off CUDA).
        assert performance.fused_add_layer_norms(unet) == 16
        assert sum(isinstance(m, performance.FusedNormTransformerBlock) for m in unet.modules()) == 4
        wrappers = [m for m in unet.modules() if isinstance(m, performance.FusedNormSpatioTemporalTransformer)]
        assert len(wrappers) == 4
        original_calls = []
        for w in wrappers:  # the wrappers' own forward runs, not diffusers' (which the fallback would call)
            w.model.register_forward_hook(lambda *args: original_calls.append(1))
        fused_norms = unet(*inputs, return_dict=False)[0]
        assert not original_calls
        assert performance.fused_add_layer_norms(unet) == 0
    torch.testing.assert_close(rewritten, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(frame_major, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused_norms, reference, rtol=1e-4, atol=1e-4)


def test_fused_norm_transformer_block_is_diffusers_block():
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(0)
    block = BasicTransformerBlock(24, 2, 12, cross_attention_dim=16).eval()
    for p in block.parameters():  # diffusers' init leaves norms at 1/0: make every term count
        torch.nn.init.normal_(p, std=0.3)
    assert performance.FusedNormTransformerBlock.suits(block)
    fused = performance.FusedNormTransformerBlock(block)
    original_calls = []
    block.register_forward_hook(lambda *args: original_calls.append(1))
    x = torch.randn(6, 5, 24)
    with torch.no_grad():
        for context_tokens in (1, 2):  # two context tokens: not covered, the original block runs
            context = torch.randn(6, context_tokens, 16)
            out = fused(x, encoder_hidden_states=context)
            assert len(original_calls) == context_tokens - 1
            torch.testing.assert_close(out, block(x, encoder_hidden_states=context), rtol=1e-5, atol=1e-5)
            original_calls.clear()


@pytest.mark.parametrize("c_outer, c_inner", [(5, 1), (15, 5)], ids=["per-group", "per-position"])
def test_add_norm_broadcasts_c_as_documented(c_outer, c_inner):
    # The Triton kernel reads c's row (i // c_outer) * c_inner + i % c_inner for row i; torch's path must agree.
    torch.manual_seed(0)
    x, r = torch.randn(2, 3 * 5, 8), torch.randn(2, 3 * 5, 8)
    c = torch.randn(2 * 3 * 5 // c_outer * c_inner, 8)
    norm = torch.nn.LayerNorm(8)
    rows = torch.arange(2 * 3 * 5)
    expected = (x + r).reshape(-1, 8) + c[(rows // c_outer) * c_inner + rows % c_inner]
    with torch.no_grad():
        s, y = performance._add_norm(x, r, norm, True, c, c_outer, c_inner)
        torch.testing.assert_close(s.reshape(-1, 8), expected)
        torch.testing.assert_close(y, norm(s))
        first, s3, y3 = performance._add_norm(x, r, norm, True, c, c_outer, c_inner, keep_first=True)
        assert torch.equal(first, x + r) and torch.equal(s3, s) and torch.equal(y3, y)


def test_frame_major_temporal_block_is_diffusers_block():
    from diffusers.models.attention import TemporalBasicTransformerBlock

    torch.manual_seed(0)
    block = TemporalBasicTransformerBlock(24, 24, 2, 12, cross_attention_dim=16).eval()
    for p in block.parameters():  # diffusers' init leaves norms at 1/0: make every term count
        torch.nn.init.normal_(p, std=0.3)
    frames, positions = 3, 5
    x = torch.randn(2 * frames, positions, 24)
    frame_major = performance.FrameMajorTemporalBlock(block)
    original_calls = []
    block.register_forward_hook(lambda *args: original_calls.append(1))
    with torch.no_grad():
        for context_tokens in (1, 2):  # two context tokens: not covered, the original block runs
            context = torch.randn(2 * positions, context_tokens, 16)
            out = frame_major(x, frames, context)
            assert len(original_calls) == context_tokens - 1
            torch.testing.assert_close(out, block(x, frames, context), rtol=1e-5, atol=1e-5)
            original_calls.clear()


def test_efficient_attention_processor_falls_back_off_cuda():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8)
    x = torch.randn(6, 25, 32)
    with torch.no_grad():
        reference = attn(x)
        attn.set_processor(performance.EfficientShortAttnProcessor(AttnProcessor2_0()))
        assert torch.equal(attn(x), reference)


def test_one_sample_at_a_time_gives_the_batch_output(unet):
    inputs = unet_inputs(2, seed=1)
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert performance.one_sample_at_a_time(unet)
        assert not performance.one_sample_at_a_time(unet)
        sample, t, emb, ids = inputs
        tupled = unet(sample, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
        per_sample_t = unet(sample, t.repeat(2), encoder_hidden_states=emb, added_time_ids=ids).sample
    torch.testing.assert_close(tupled, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample_t, reference, rtol=1e-5, atol=1e-5)


def test_profiles_on_a_gpu_and_on_a_cpu():
    fast = performance.profile_settings("fast", "NVIDIA H200", 139.8)
    assert (fast.compile, fast.compile_vae, fast.channel_stats_group_norm, fast.efficient_temporal_attention,
            fast.fused_geglu, fast.triton_temporal_conv, fast.triton_temporal_attention, fast.triton_add_layer_norm,
            fast.cuda_graphs, fast.fp32_vae_encoder) == (True,) * 10
    low = performance.profile_settings("low", "NVIDIA H200", 139.8)
    assert (low.cpu_offload, low.unet_one_sample_at_a_time, low.decode_chunk_size, low.compile) == \
        ("model", True, 4, False)
    balanced = performance.profile_settings("balanced", "NVIDIA H200", 139.8)
    assert balanced.fp32_vae_encoder  # exact: the same float32 encode without the per-job casts
    assert not (balanced.compile or balanced.channel_stats_group_norm or balanced.efficient_temporal_attention
                or balanced.fused_geglu or balanced.triton_temporal_conv or balanced.triton_temporal_attention
                or balanced.triton_add_layer_norm or balanced.cuda_graphs)
    assert performance.profile_settings("auto", "NVIDIA GeForce RTX 4060 Ti", 15.6).profile == "low"
    three_short_jobs = [JobWork(Shape(1024, 576, 25), 25)] * 3
    assert performance.profile_settings("auto", "NVIDIA H200", 139.8, three_short_jobs).profile == "balanced"
    assert performance.profile_settings("fast", "cpu", 0.0) == performance.PerformanceSettings("off", "float32")
    with pytest.raises(UsageError, match=r"unknown performance setting\(s\) background_encode"):
        performance.resolve_settings("fast", "NVIDIA H200", 139.8, background_encode=True)


def test_vae_encoder_in_float32_skips_the_upcast_and_keeps_the_latents():
    from PIL import Image

    pipe = build_tiny_pipeline().to(torch.float16)
    image = Image.fromarray(torch.arange(64 * 64 * 3).reshape(64, 64, 3).remainder(251).to(torch.uint8).numpy())

    def latents():
        return pipe(image, height=64, width=64, num_frames=8, num_inference_steps=2, decode_chunk_size=4,
                    generator=torch.Generator().manual_seed(3), output_type="latent").frames

    reference = latents()  # the pipeline upcasts the whole VAE to float32 to encode, then casts it back
    assert performance.vae_encoder_in_float32(pipe.vae)
    assert (pipe.vae.dtype, pipe.vae.decoder.conv_in.weight.dtype) == (torch.float32, torch.float16)
    assert not performance.vae_encoder_in_float32(pipe.vae)
    assert torch.equal(latents(), reference)
    assert pipe.vae.decoder.conv_in.weight.dtype == torch.float16  # no cast happened


def test_optimize_pipeline_leaves_a_cpu_pipeline_alone():
    pipe = build_tiny_pipeline()
    settings = performance.profile_settings("fast", "NVIDIA H200", 139.8)
    record = performance.optimize_pipeline(pipe, settings)
    assert (record.applied, record.skipped) == ((), ("all: pipeline is not on a CUDA device",))


def test_geglu_weights_are_interleaved_in_groups_of_value_then_gate_rows():
    weight = torch.arange(256.0)[:, None].repeat(1, 3)  # row i holds i
    w, b = performance.interleave_geglu(weight, None)
    # The Triton kernel reads 64 value rows, then their 64 gate rows (value rows 0-127, gate rows 128-255).
    assert w[:, 0].tolist() == [*range(0, 64), *range(128, 192), *range(64, 128), *range(192, 256)]
    assert torch.equal(b, torch.zeros(256))


@pytest.mark.parametrize("bias", [True, False])
def test_fused_geglu_computes_diffusers_geglu(bias):
    from diffusers.models.activations import GEGLU

    torch.manual_seed(0)
    geglu = GEGLU(24, 192, bias=bias)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(performance.FusedGEGLU(geglu)(x), geglu(x), rtol=1e-5, atol=1e-5)


def test_triton_temporal_conv_computes_the_conv3d():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 24, (3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(2, 16, 5, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(performance.TritonTemporalConv(conv)(x), conv(x), rtol=1e-5, atol=1e-5)


def test_triton_rewrites_keep_the_unet_and_decoder_output():
    # Off CUDA the rewritten modules compute with torch on the rearranged weights the kernels read on a GPU, so a
    # wrong rearrangement shows here.
    pipe = build_tiny_pipeline()
    inputs = unet_inputs(2)
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = pipe.unet(*inputs, return_dict=False)[0]
        frames = pipe.vae.decode(latents, num_frames=4).sample
        assert performance.fused_geglus(pipe.unet) == 12
        assert performance.triton_temporal_convs(pipe.unet) > 0
        assert performance.triton_temporal_convs(pipe.vae.decoder) > 0
        assert performance.fused_geglus(pipe.unet) == performance.triton_temporal_convs(pipe.unet) == 0
        torch.testing.assert_close(pipe.unet(*inputs, return_dict=False)[0], reference, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(pipe.vae.decode(latents, num_frames=4).sample, frames, rtol=1e-4, atol=1e-4)


def test_cuda_graph_calls_pass_other_calls_through_and_can_be_undone(unet):
    inputs = unet_inputs(2)
    with torch.no_grad():
        reference = unet(*inputs, return_dict=False)[0]
        assert performance.cuda_graph_calls(unet)
        assert not performance.cuda_graph_calls(unet)
        # CPU tensors are never captured: the call goes straight to the module.
        assert torch.equal(unet(*inputs, return_dict=False)[0], reference)
        assert not unet._compiled_call_impl.graphs
        assert performance.drop_cuda_graphs(unet) and unet._compiled_call_impl is None
        assert not performance.drop_cuda_graphs(unet)
