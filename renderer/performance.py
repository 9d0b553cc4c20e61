"""Speed and memory profiles for the SVD pipeline: what to turn on for a GPU, and applying it in place.

Only the engine imports this module. It imports torch at module level but touches no GPU until asked, so it imports
and runs (as a no-op) on a machine without one. The measurements behind every default are in docs/performance.md.

The engine's side of the contract:

    settings = resolve_settings(profile, device_name, vram_gib, work, **overrides)   # work: profiles.JobWork list
    pipe = load(..., dtype=settings.torch_dtype)          # .to("cuda") as usual; offloading moves it back itself
    record = optimize_pipeline(pipe, settings)             # once, before the first job; record goes in manifests
    for job in jobs:
        chunk = effective_decode_chunk_size(settings, job.decode_chunk_size)
        with torch.inference_mode(), call_context(settings):
            latents = pipe(..., decode_chunk_size=chunk, output_type="latent").frames
            video = pipe.decode_latents(latents, num_frames, chunk)     # compiled decoder when settings.compile_vae
        frames = frames_to_uint8(postprocessed video)                   # on the GPU
    (renderer.batch encodes each job's files on a writer thread while the next job renders.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from renderer.errors import UsageError
from renderer.profiles import (PROFILES, JobWork, PerformanceRecord, Shape, choose_auto, compile_cache_dir,
                               warm_marker)

DTYPES = ("float16", "bfloat16", "float32")
ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")
CPU_OFFLOAD_MODES = ("none", "model", "sequential")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")

# Decoding 8 frames at a time peaks at 11.0 GiB even with offloading; 4 keeps `low` at 6.8 GiB reserved (2: 6.1 GiB,
# and slower). The temporal decoder mixes frames within a chunk, so this changes the frames (docs/performance.md).
LOW_DECODE_CHUNK_SIZE = 4
# The widest intermediate a chunked feed-forward may allocate (GEGLU's projection output).
FEED_FORWARD_CHUNK_BYTES = 128 << 20


@dataclass(frozen=True)
class PerformanceSettings:
    """How the engine runs the pipeline; `profile` names the preset these values came from."""

    profile: str = "off"
    dtype: str = "float32"
    compile: bool = False
    compile_mode: str = "default"
    compile_vae: bool = False
    # Compile the UNet's repeated blocks (diffusers' regional compilation) instead of the whole UNet: each distinct
    # block shape compiles once and is reused, so compiling and a warm start cost a fraction of the whole graph's.
    compile_regions: bool = False
    compile_cache_dir: str | None = None
    attention_backend: str = "auto"
    channels_last: bool = False
    fuse_qkv: bool = False
    cross_attention_shortcut: bool = False
    temporal_conv_as_2d: bool = False
    channel_stats_group_norm: bool = False
    efficient_temporal_attention: bool = False
    fused_geglu: bool = False
    triton_temporal_conv: bool = False
    triton_temporal_attention: bool = False
    triton_add_layer_norm: bool = False
    cuda_graphs: bool = False
    fp32_vae_encoder: bool = False
    allow_tf32: bool = False
    decode_chunk_size: int | None = None
    cpu_offload: str = "none"
    forward_chunking: bool = False
    unet_one_sample_at_a_time: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype to load the pipeline in."""
        return getattr(torch, self.dtype)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for manifests."""
        return asdict(self)


def profile_settings(
    profile: str, device_name: str = "cpu", total_vram_gib: float = 0.0, work: list[JobWork] | None = None
) -> PerformanceSettings:
    """The named profile's settings on this device; `auto` picks one from the VRAM, the jobs and the compile cache
    (profiles.choose_auto)."""
    if profile not in PROFILES:
        raise UsageError(f"unknown performance profile {profile!r}; choose one of {', '.join(PROFILES)}")
    on_gpu = total_vram_gib > 0 and not device_name.lower().startswith("cpu")
    if not on_gpu:
        # Nothing here speeds up the CPU path and fp16 is slow or unsupported there: run plain float32 diffusers.
        return PerformanceSettings(profile="off", dtype="float32")
    if profile == "auto":
        profile = choose_auto(total_vram_gib, work, warm=lambda shape: is_warm(shape, device_name)).profile
    if profile == "off":
        return PerformanceSettings(profile="off", dtype="float16")
    if profile == "low":
        return PerformanceSettings(
            profile="low",
            dtype="float16",
            cpu_offload="model",
            forward_chunking=True,
            unet_one_sample_at_a_time=True,
            cross_attention_shortcut=True,
            decode_chunk_size=LOW_DECODE_CHUNK_SIZE,
        )
    # Left out on purpose (docs/performance.md has the numbers): a forced SDPA backend (torch already picks cuDNN's
    # attention on Hopper), channels_last (slower eager; inductor picks layouts itself) and fused QKV (no gain).
    # temporal_conv_as_2d, the per-channel GroupNorm and the Triton temporal convolution pay off compiled only (2%
    # and 10% slower in eager; the latter copies to channels-last there); the temporal attention kernel and the
    # Triton kernels change rounding, and `balanced` keeps frames bit-identical to plain diffusers. The Triton
    # kernels need Hopper or newer and are skipped (and recorded as skipped) elsewhere.
    balanced = PerformanceSettings(
        profile="balanced",
        dtype="float16",
        cross_attention_shortcut=True,
        fp32_vae_encoder=True,
    )
    if profile == "balanced":
        return balanced
    return replace(
        balanced,
        profile="fast",
        temporal_conv_as_2d=True,
        channel_stats_group_norm=True,
        efficient_temporal_attention=True,
        fused_geglu=True,
        triton_temporal_conv=True,
        triton_temporal_attention=True,
        triton_add_layer_norm=True,
        cuda_graphs=True,
        compile=True,
        compile_vae=True,
        compile_cache_dir=compile_cache_dir(),
    )


def auto_settings(device_name: str, total_vram_gib: float, work: list[JobWork] | None = None) -> PerformanceSettings:
    """The settings `profile: auto` resolves to on this device (name as torch reports it; 0 GiB means no GPU)."""
    return profile_settings("auto", device_name, total_vram_gib, work)


# `auto` compiles only where the compile cache is warm or the batch repays a cold compile; these markers, written
# after a shape's first compiled job succeeds, are how it knows the cache's state. They live in the cache folder, so
# a CI cache that keeps the folder keeps them, and deleting the folder forgets them.

def _warm_marker(shape: Shape, device_name: str, dtype: str, compile_mode: str, cache_dir: str | None = None):
    from renderer import __version__

    return warm_marker(cache_dir or compile_cache_dir(), shape, device_name=device_name, torch_version=torch.__version__,
                       svdrender_version=__version__, dtype=dtype, compile_mode=compile_mode)


def is_warm(shape: Shape, device_name: str, dtype: str = "float16", compile_mode: str = "default") -> bool:
    """Whether the compile cache holds `fast`'s compiled code for this shape on this GPU, torch and svdrender."""
    return _warm_marker(shape, device_name, dtype, compile_mode).is_file()


def mark_warm(settings: PerformanceSettings, shape: Shape, device_name: str) -> None:
    """Record that a compiled job of this shape finished, so later runs know the cache is warm for it."""
    if not (settings.compile and settings.compile_cache_dir):
        return
    marker = _warm_marker(shape, device_name, settings.dtype, settings.compile_mode, settings.compile_cache_dir)
    if not marker.is_file():
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"shape": [shape.width, shape.height, shape.num_frames],
                                          "device": device_name, "torch": torch.__version__}) + "\n")
        except OSError:
            pass  # a read-only cache only makes the next `auto` more careful


def resolve_settings(
    profile: str = "auto",
    device_name: str = "cpu",
    total_vram_gib: float = 0.0,
    work: list[JobWork] | None = None,
    **overrides: Any,
) -> PerformanceSettings:
    """A profile's settings with the recipe's or command line's explicit values on top; None values are ignored."""
    settings = profile_settings(profile, device_name, total_vram_gib, work)
    known = {f.name for f in fields(PerformanceSettings)} - {"profile"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown performance setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    validate_settings(settings)
    return settings


def validate_settings(settings: PerformanceSettings) -> None:
    """Raise UsageError for a value outside its allowed set."""
    choices = {
        "dtype": DTYPES,
        "attention_backend": ATTENTION_BACKENDS,
        "cpu_offload": CPU_OFFLOAD_MODES,
        "compile_mode": COMPILE_MODES,
    }
    for name, allowed in choices.items():
        value = getattr(settings, name)
        if value not in allowed:
            raise UsageError(f"performance.{name}: {value!r} is not one of {', '.join(allowed)}")
    if settings.decode_chunk_size is not None and settings.decode_chunk_size < 1:
        raise UsageError(f"performance.decode_chunk_size: must be at least 1, got {settings.decode_chunk_size}")
    if settings.compile and settings.cpu_offload != "none":
        raise UsageError("performance: compile and cpu_offload cannot be combined; offloading hooks defeat compilation")


def _pipeline_device(pipe) -> torch.device:
    # `_execution_device` follows offload hooks; `device` is where the weights are now.
    try:
        return torch.device(pipe._execution_device)
    except Exception:
        return torch.device(pipe.device)


def optimize_pipeline(pipe, settings: PerformanceSettings) -> PerformanceRecord:
    """Apply `settings` to a loaded StableVideoDiffusionPipeline in place; return what was applied, for manifests.

    The pipeline's __call__ is unchanged. Calling this twice is safe: steps already applied are skipped. On a CPU
    pipeline every GPU-only step is skipped and recorded as such.
    """
    validate_settings(settings)
    applied: list[str] = []
    skipped: list[str] = []
    cache_dir = None

    def record() -> PerformanceRecord:
        return PerformanceRecord(settings.profile, settings.as_dict(), tuple(applied), tuple(skipped),
                                 compile_cache_dir=cache_dir)

    if settings.profile == "off":
        return record()

    wants_gpu = settings.cpu_offload != "none"
    on_cuda = torch.cuda.is_available() and (wants_gpu or _pipeline_device(pipe).type == "cuda")
    if not on_cuda:
        skipped.append("all: pipeline is not on a CUDA device")
        return record()

    def did(what: str) -> None:
        applied.append(what)

    if settings.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        did("tf32 matmul and convolution")

    # Each rewrite returns how many layers it changed: 0 means it was already applied.
    if settings.fuse_qkv and (n := fuse_qkv_projections(pipe.unet)):
        did(f"fused qkv projections in {n} attention layers")
    if settings.cross_attention_shortcut and (n := single_token_cross_attention(pipe.unet)):
        did(f"single-token cross-attention shortcut in {n} layers")
    triton_attention = False
    triton_norms = False
    triton_settings = ("fused_geglu", "triton_temporal_conv", "triton_temporal_attention", "triton_add_layer_norm")
    if any(getattr(settings, k) for k in triton_settings):
        triton_problem = triton_unavailable() or check_triton_kernels()
        if triton_problem is not None:
            wanted = [k for k in triton_settings if getattr(settings, k)]
            skipped.append(f"{', '.join(wanted)}: {triton_problem}")
        else:
            triton_attention = settings.triton_temporal_attention
            triton_norms = settings.triton_add_layer_norm
            if settings.fused_geglu and (n := fused_geglus(pipe.unet)):
                did(f"fused Triton GEGLU projection in {n} feed-forwards")
            if settings.triton_temporal_conv and (
                n := triton_temporal_convs(pipe.unet) + triton_temporal_convs(pipe.vae.decoder)
            ):
                did(f"{n} temporal (3,1,1) Conv3d run as a Triton implicit GEMM")
    if settings.temporal_conv_as_2d and (n := temporal_convs_as_2d(pipe.unet) + temporal_convs_as_2d(pipe.vae)):
        did(f"{n} temporal (k,1,1) Conv3d run as Conv2d")
    if settings.channel_stats_group_norm and (
        n := channel_stats_group_norms(pipe.unet) + channel_stats_group_norms(pipe.vae.decoder)
    ):
        did(f"{n} GroupNorms computed from per-channel statistics")
    if triton_attention and (n := frame_major_temporal_blocks(pipe.unet)):
        did(f"{n} temporal transformer blocks kept frame-major, their attention by a Triton short-sequence kernel")
    if triton_norms and (n := fused_add_layer_norms(pipe.unet)):
        did(f"{n} layer norms computed with their residual adds by a Triton one-pass kernel")
    # The frame-major blocks compute their own attention: the processor would only be recorded, never run.
    if settings.efficient_temporal_attention and not triton_attention and (
        n := efficient_temporal_attention(pipe.unet)
    ):
        did(f"memory-efficient SDPA kernel for {n} temporal self-attention layers")
    # Convolutions run in NHWC on tensor cores; NCHW costs a transpose around each one.
    if settings.channels_last and (n := channels_last_convolutions(pipe.unet) + channels_last_convolutions(pipe.vae)):
        did(f"channels_last weights for {n} 2-d convolutions in unet and vae")
    if settings.fp32_vae_encoder and vae_encoder_in_float32(pipe.vae):
        did("vae encoder kept in float32 (no per-job upcast of the whole vae)")
    if settings.unet_one_sample_at_a_time and one_sample_at_a_time(pipe.unet):
        did("unet runs the CFG pair one sample at a time")
    if settings.forward_chunking and (n := chunk_feed_forwards(pipe.unet)):
        did(f"{n} unet feed-forwards chunked by rows (intermediates <= {FEED_FORWARD_CHUNK_BYTES >> 20} MiB)")

    if settings.cpu_offload != "none":
        # Offloading frees and re-allocates whole models; growable segments keep the reserved pool near the
        # allocated peak instead of holding freed blocks of the wrong size.
        try:
            torch.cuda.memory._set_allocator_settings("expandable_segments:True")
            did("allocator expandable_segments")
        except Exception as exc:  # private API: record, never fail the run over it
            skipped.append(f"expandable_segments: {exc}")

    if settings.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device="cuda")
        did("model cpu offload")
    elif settings.cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device="cuda")
        did("sequential cpu offload")

    if settings.compile or settings.compile_vae:
        if settings.compile_cache_dir:
            cache_dir = settings.compile_cache_dir
            # Inductor reads this at compile time; its FX-graph and autograd caches then persist between runs.
            os.makedirs(cache_dir, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
            os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(cache_dir, "triton"))
        if settings.compile and settings.compile_regions and (n := _compile_repeated_blocks(pipe.unet,
                                                                                          settings.compile_mode)):
            did(f"torch.compile of {n} repeated unet blocks (regional; mode={settings.compile_mode}, static shapes)")
        elif settings.compile and not settings.compile_regions and _compile_in_place(
                pipe.unet, settings.compile_mode, fullgraph=True):
            did(f"torch.compile unet (mode={settings.compile_mode}, fullgraph, static shapes)")
        if settings.compile_vae and _compile_in_place(pipe.vae.decoder, settings.compile_mode, fullgraph=False):
            did(f"torch.compile vae decoder (mode={settings.compile_mode}, static shapes)")
    if settings.cuda_graphs and cuda_graph_calls(pipe.unet):
        did("unet calls replayed as CUDA graphs")

    if settings.attention_backend != "auto":
        did(f"sdpa backend {settings.attention_backend} first (call_context)")
    if settings.decode_chunk_size is not None:
        did(f"decode_chunk_size {settings.decode_chunk_size}")
    return record()


def channels_last_convolutions(module: torch.nn.Module) -> int:
    """Store every Conv2d weight channels_last; returns how many. (Module.to() refuses: SVD also has Conv3d.)"""
    count = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d) and not m.weight.is_contiguous(memory_format=torch.channels_last):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
            count += 1
    return count


def _compile_in_place(module: torch.nn.Module, mode: str, fullgraph: bool) -> bool:
    # Module.compile keeps the module object (config, hooks, .to()) and compiles lazily on the first call.
    if getattr(module, "_compiled_call_impl", None) is not None:
        return False
    options = {} if mode == "default" else {"mode": mode}
    module.compile(fullgraph=fullgraph, dynamic=False, **options)
    return True


# SVD's UNet repeats these at every resolution level; everything between them (down/upsamplers, embeddings, the
# skip concatenations) is a few cheap ops that the CUDA graphs replay without launch overhead.
REPEATED_UNET_BLOCKS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")


def _compile_repeated_blocks(unet: torch.nn.Module, mode: str) -> int:
    """Regional compilation through diffusers' `compile_repeated_blocks`; returns how many blocks, 0 if done before."""
    blocks = [m for m in unet.modules() if type(m).__name__ in REPEATED_UNET_BLOCKS]
    if not blocks or any(getattr(m, "_compiled_call_impl", None) is not None for m in blocks):
        return 0
    # One compiled graph per distinct block shape: SVD-XT has about 20, above dynamo's default of 8 recompiles per
    # code object, past which it would run the rest eagerly without saying so.
    dynamo_config = torch._dynamo.config
    limit_name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit_name, max(getattr(dynamo_config, limit_name), 64))
    unet._repeated_blocks = list(REPEATED_UNET_BLOCKS)
    options = {} if mode == "default" else {"mode": mode}
    unet.compile_repeated_blocks(fullgraph=True, dynamic=False, **options)
    return len(blocks)


def vae_encoder_in_float32(vae: torch.nn.Module) -> bool:
    """Keep an fp16 SVD VAE's encoder (and quant_conv) in float32 for good; True if changed.

    SVD's VAE config sets force_upcast, so each pipeline call casts the whole VAE to float32 to encode the input image
    and back to fp16 (0.019 s a job on an H200, and a warning each way). The pipeline checks `vae.dtype`, the first
    parameter's, which is the encoder's: with the encoder already in float32 it skips both casts and encodes with the
    same float32 weights (fp16 values widened) as before, so the image latents are bit-identical; the decoder stays
    fp16. Costs the encoder's extra 68 MB.
    """
    if not getattr(vae.config, "force_upcast", False) or vae.dtype != torch.float16:
        return False
    vae.encoder.to(torch.float32)
    vae.quant_conv.to(torch.float32)
    return vae.dtype == torch.float32


def fuse_qkv_projections(unet: torch.nn.Module) -> int:
    """Fuse each attention layer's q/k/v (or k/v) projections into one GEMM; returns how many layers were fused."""
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    count = 0
    for module in unet.modules():
        if isinstance(module, Attention) and not getattr(module, "fused_projections", False):
            module.fuse_projections(fuse=True)
            module.set_processor(FusedAttnProcessor2_0())
            count += 1
    return count


class SingleTokenCrossAttnProcessor:
    """Cross-attention onto a single key/value token, computed exactly without the attention kernel.

    With one key the softmax weight is exactly 1, so the output is to_out(to_v(context)) for every query. SVD's
    cross-attention always attends to one CLIP image token, so the query projection, the SDPA call over every
    latent pixel and the output projection of identical rows are all skipped. Any other call goes to `fallback`.
    """

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if (
            encoder_hidden_states is None
            or encoder_hidden_states.ndim != 3
            or encoder_hidden_states.shape[1] != 1
            or hidden_states.ndim != 3
            or attention_mask is not None
            or attn.spatial_norm is not None
            or attn.group_norm is not None
        ):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        out = _single_token_output(attn, encoder_hidden_states)  # [B, 1, C]
        out = out.expand(hidden_states.shape[0], hidden_states.shape[1], out.shape[-1])
        if attn.residual_connection:
            out = out + hidden_states
        if attn.rescale_output_factor != 1.0:
            out = out / attn.rescale_output_factor
        return out


def _single_token_output(attn, context: torch.Tensor) -> torch.Tensor:
    """The output of attention onto the one token of each context [N, 1, C'] row: [N, 1, C]."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    return attn.to_out[1](attn.to_out[0](attn.to_v(context)))


def single_token_cross_attention(module: torch.nn.Module) -> int:
    """Route every cross-attention layer of `module` through SingleTokenCrossAttnProcessor; returns how many."""
    from diffusers.models.attention_processor import Attention

    count = 0
    for m in module.modules():
        if isinstance(m, Attention) and m.is_cross_attention and not isinstance(m.processor, SingleTokenCrossAttnProcessor):
            m.set_processor(SingleTokenCrossAttnProcessor(m.processor))
            count += 1
    return count


class TemporalConvAs2d(torch.nn.Module):
    """A Conv3d with a (k, 1, 1) kernel run as a Conv2d with a (k, 1) kernel over (frames, height·width).

    Same arithmetic; but a channels-last 2-d activation, permuted to (B, C, F, H, W) as SVD's temporal blocks do, is
    already NHWC for this Conv2d, so cuDNN runs it without the NCHW↔NHWC transposes its 3-d path adds.
    """

    def __init__(self, conv: torch.nn.Conv3d):
        super().__init__()
        self.weight = torch.nn.Parameter(conv.weight.detach()[..., 0].clone(), requires_grad=False)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.padding = (conv.padding[0], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        y = torch.nn.functional.conv2d(x.reshape(b, c, f, h * w), self.weight, self.bias, padding=self.padding)
        return y.reshape(b, y.shape[1], f, h, w)


class ChannelStatsGroupNorm(torch.nn.Module):
    """GroupNorm from per-channel mean and variance, combined per group: the same function, in other reductions.

    SVD's temporal blocks normalise [B, C, F, H, W] tensors with B = 2 (the CFG pair): 64 groups of 2.3 M values
    each, which Inductor's fused group-norm reduction runs on 64 thread blocks at a few percent of memory bandwidth
    (1.8 ms a call on an H200, docs/performance.md). Per-channel statistics are a reduction over the non-channel
    dimensions, which Inductor splits across the whole GPU; the group statistics follow exactly from them
    (equal counts per channel: var_g = mean(var_c) + mean((mean_c - mean_g)^2)). Welford in float32 throughout, as
    the native kernel, so the output differs from it only by rounding.
    """

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, g = x.shape[0], x.shape[1], self.num_groups
        var_c, mean_c = torch.var_mean(x.float(), dim=tuple(range(2, x.dim())), correction=0)
        var_c, mean_c = var_c.view(b, g, c // g), mean_c.view(b, g, c // g)
        mean_g = mean_c.mean(-1, keepdim=True)
        var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).square().mean(-1, keepdim=True)
        scale = torch.rsqrt(var_g + self.eps).expand(b, g, c // g).reshape(b, c)
        if self.weight is not None:
            scale = scale * self.weight.float()
        shift = -mean_g.expand(b, g, c // g).reshape(b, c) * scale
        if self.bias is not None:
            shift = shift + self.bias.float()
        shape = (b, c) + (1,) * (x.dim() - 2)
        return (x.float() * scale.view(shape) + shift.view(shape)).to(x.dtype)


def channel_stats_group_norms(module: torch.nn.Module) -> int:
    """Replace every torch.nn.GroupNorm under `module` with ChannelStatsGroupNorm; returns how many."""
    return _replace_children(module, lambda child, parent: type(child) is torch.nn.GroupNorm, ChannelStatsGroupNorm)


class EfficientShortAttnProcessor:
    """Self-attention through PyTorch's memory-efficient SDPA kernel, for SVD's temporal layers (25-token sequences).

    torch picks cuDNN's flash kernel for every SDPA call on Hopper; on sequences of 25 frames it runs at 9 TFLOP/s
    against 14 for the memory-efficient kernel (15 ms against 9 ms of each step, docs/performance.md). The kernels
    compute the same softmax attention; outputs differ by rounding. Anything but plain CUDA self-attention goes to
    `fallback`.
    """

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if (
            encoder_hidden_states is not None
            or attention_mask is not None
            or hidden_states.ndim != 3
            or not hidden_states.is_cuda
            or not _plain_attention(attn)
        ):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        return _self_attention(attn, hidden_states, lambda q, k, v: (
            torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0]))


def _self_attention(attn, x: torch.Tensor, sdpa=torch.nn.functional.scaled_dot_product_attention) -> torch.Tensor:
    """A _plain_attention layer's self-attention over x [B, N, C]: its projections, `sdpa` on [B, heads, N, D]
    views, its output projection; what diffusers' AttnProcessor2_0 computes for such a layer."""
    b, n, _ = x.shape
    q, k, v = (t.view(b, n, attn.heads, -1).transpose(1, 2) for t in (attn.to_q(x), attn.to_k(x), attn.to_v(x)))
    return attn.to_out[1](attn.to_out[0](sdpa(q, k, v).transpose(1, 2).reshape(b, n, -1)))


def _plain_attention(attn) -> bool:
    """Whether a diffusers Attention is only projections, softmax attention and the output projection."""
    return (attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
            and not attn.residual_connection and attn.rescale_output_factor == 1.0)


def efficient_temporal_attention(unet: torch.nn.Module) -> int:
    """Route the self-attention of every TemporalBasicTransformerBlock through EfficientShortAttnProcessor."""
    from diffusers.models.attention import TemporalBasicTransformerBlock

    count = 0
    for block in unet.modules():
        if isinstance(block, TemporalBasicTransformerBlock) and not isinstance(block.attn1.processor,
                                                                               EfficientShortAttnProcessor):
            block.attn1.set_processor(EfficientShortAttnProcessor(block.attn1.processor))
            count += 1
    return count


class FrameMajorTemporalBlock(torch.nn.Module):
    """diffusers' TemporalBasicTransformerBlock on the spatial blocks' frame-major tokens, without its two permutes.

    diffusers reorders [B·F, P, C] (frames outer) to [B·P, F, C] (positions outer) before every temporal block and
    back after it, although only the self-attention over frames cares: the norms, projections and feed-forwards work
    token by token. Compiled, each permute is fused into a neighbouring layer norm or residual add as a strided load
    or store, and Inductor then generates those norms as two-pass loops (docs/performance.md). Here the block stays
    frame-major and the attention reads each position's frames a stride apart: renderer/triton_kernels.py's
    short-sequence kernel on CUDA fp16/bf16, else SDPA on reordered copies. The cross-attention onto the one CLIP
    token is SingleTokenCrossAttnProcessor's exact shortcut, broadcast over frames. The same arithmetic on the same
    tokens; what the rewrite does not cover (chunked feed-forwards, a context of more than one token) goes to the
    original block.
    """

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block
        self.fused_norms = False  # fused_add_layer_norms turns the Triton add + layer norm on

    @staticmethod
    def suits(block: torch.nn.Module) -> bool:
        from diffusers.models.attention import TemporalBasicTransformerBlock

        # diffusers' own forward only runs with equal block and inner widths (is_res), as SVD's have.
        return (type(block) is TemporalBasicTransformerBlock and block.is_res and _plain_attention(block.attn1)
                and (block.attn2 is None or _plain_attention(block.attn2)))

    def forward(self, hidden_states: torch.Tensor, num_frames: int, encoder_hidden_states=None,
                normed: torch.Tensor | None = None) -> torch.Tensor:
        """`normed`, when given, is norm_in(hidden_states), computed by the caller
        (FusedNormSpatioTemporalTransformer)."""
        blk = self.block
        single_token = encoder_hidden_states is not None and encoder_hidden_states.ndim == 3 and (
            encoder_hidden_states.shape[1] == 1)
        if blk._chunk_size is not None or hidden_states.ndim != 3 or not (single_token or blk.attn2 is None):
            return blk(hidden_states, num_frames=num_frames, encoder_hidden_states=encoder_hidden_states)
        bf, p, c = hidden_states.shape
        b = bf // num_frames
        normed = blk.norm_in(hidden_states) if normed is None else normed
        h, x = _add_norm(blk.ff_in(normed), hidden_states, blk.norm1, self.fused_norms)
        attention = self._self_attention(x, b, num_frames)
        # One context token per sequence (position): its output is added to that position in every frame.
        cross = _single_token_output(blk.attn2, encoder_hidden_states) if blk.attn2 is not None else None
        h, x = _add_norm(attention, h, blk.norm3, self.fused_norms, cross, num_frames * p, p)
        return blk.ff(x) + h

    def _self_attention(self, x: torch.Tensor, b: int, f: int) -> torch.Tensor:
        attn = self.block.attn1
        bf, p, _ = x.shape
        # [B, P, F, C] views: B·P sequences of F frames, a frame P rows apart.
        q, k, v = (t.view(b, f, p, -1).transpose(1, 2) for t in (attn.to_q(x), attn.to_k(x), attn.to_v(x)))
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and f <= 128:
            out = _short_attention_op(q, k, v, attn.heads)
        else:
            c, d = q.shape[-1], q.shape[-1] // attn.heads
            q, k, v = (t.unflatten(-1, (attn.heads, d)).transpose(2, 3).reshape(b * p, attn.heads, f, d)
                       for t in (q, k, v))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            out = out.view(b, p, attn.heads, f, d).transpose(2, 3).reshape(b, p, f, c)
        out = out.transpose(1, 2).reshape(bf, p, -1)  # a view when the kernel wrote it frame-major
        return attn.to_out[1](attn.to_out[0](out))


def frame_major_temporal_blocks(unet: torch.nn.Module) -> int:
    """Replace every TemporalBasicTransformerBlock FrameMajorTemporalBlock covers with it; returns how many."""
    return _replace_children(unet, lambda child, parent: (FrameMajorTemporalBlock.suits(child)
                                                          and not isinstance(parent, FrameMajorTemporalBlock)),
                             FrameMajorTemporalBlock)


class FusedNormTransformerBlock(torch.nn.Module):
    """diffusers' BasicTransformerBlock (SVD's spatial blocks), with the norm before its feed-forward computed
    together with the two residual adds before it, by renderer/triton_kernels.py's one-pass kernel on CUDA.

    Compiled, Inductor fuses each residual add into the layer norm after it, but generates most of those kernels as
    two-pass loops over each row, at 800-1,700 GB/s (docs/performance.md). The kernel reads the inputs once and
    writes the sum and the normalised rows, rounding each sum as eager torch does. The self-attention is diffusers'
    AttnProcessor2_0 without its division by rescale_output_factor (1 here, so exact), which would otherwise cost a
    pass of its own in front of the kernel; the cross-attention onto the one CLIP token is
    SingleTokenCrossAttnProcessor's exact shortcut, broadcast over positions. Any call or block this does not cover
    (masks, attention kwargs, chunked feed-forwards, other norms or processors) goes to the original block.
    """

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    @staticmethod
    def suits(block: torch.nn.Module) -> bool:
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.attention_processor import AttnProcessor2_0

        return (type(block) is BasicTransformerBlock and block.norm_type == "layer_norm" and block.pos_embed is None
                and not block.only_cross_attention and block.attn2 is not None and _plain_attention(block.attn1)
                and type(block.attn1.processor) is AttnProcessor2_0 and _plain_attention(block.attn2)
                and isinstance(block.norm3, torch.nn.LayerNorm) and block.norm3.bias is not None)

    def halves(self, hidden_states: torch.Tensor, encoder_hidden_states=None):
        """(feed-forward output, residual), whose sum is the block's output, or None for a call not covered."""
        blk = self.block
        if not (blk._chunk_size is None and hidden_states.ndim == 3 and encoder_hidden_states is not None
                and encoder_hidden_states.ndim == 3 and encoder_hidden_states.shape[1] == 1):
            return None
        attention = _self_attention(blk.attn1, blk.norm1(hidden_states))  # no division by rescale_output_factor
        cross = _single_token_output(blk.attn2, encoder_hidden_states)  # [B·F, 1, C], the same for every position
        h, x = _add_norm(attention, hidden_states, blk.norm3, True, cross, hidden_states.shape[1], 1)
        return blk.ff(x), h

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, timestep=None, cross_attention_kwargs=None, class_labels=None,
                added_cond_kwargs=None) -> torch.Tensor:
        plain_call = attention_mask is None and encoder_attention_mask is None and not cross_attention_kwargs
        parts = self.halves(hidden_states, encoder_hidden_states) if plain_call else None
        if parts is None:
            return self.block(hidden_states, attention_mask=attention_mask,
                              encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, timestep=timestep,
                              cross_attention_kwargs=cross_attention_kwargs, class_labels=class_labels,
                              added_cond_kwargs=added_cond_kwargs)
        return parts[0] + parts[1]


class FusedNormSpatioTemporalTransformer(torch.nn.Module):
    """diffusers' TransformerSpatioTemporalModel whose block pairs are FusedNormTransformerBlock and
    FrameMajorTemporalBlock, with the spatial block's last residual add, the time embedding's add and the temporal
    block's first layer norm in one kernel pass: it writes the spatial output (for the time mixer), the temporal
    block's input and that input normalised. The rest is diffusers' forward, line for line. Calls it does not cover
    go to the original model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states=None, image_only_indicator=None,
                return_dict: bool = True):
        model = self.model
        pairs = list(zip(model.transformer_blocks, model.temporal_transformer_blocks))
        covered = (encoder_hidden_states is not None and image_only_indicator is not None
                   and not (torch.is_grad_enabled() and model.gradient_checkpointing)
                   and all(isinstance(b, FusedNormTransformerBlock) and isinstance(t, FrameMajorTemporalBlock)
                           and t.fused_norms for b, t in pairs))
        if not covered:
            return model(hidden_states, encoder_hidden_states=encoder_hidden_states,
                         image_only_indicator=image_only_indicator, return_dict=return_dict)
        from diffusers.models.transformers.transformer_temporal import TransformerTemporalModelOutput

        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames
        time_context = encoder_hidden_states
        time_context = time_context[None, :].reshape(batch_size, num_frames, -1, time_context.shape[-1])[:, 0]
        time_context = time_context[:, None].broadcast_to(batch_size, height * width, time_context.shape[-2],
                                                          time_context.shape[-1])
        time_context = time_context.reshape(batch_size * height * width, -1, time_context.shape[-1])
        residual = hidden_states
        hidden_states = model.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = model.proj_in(hidden_states)
        num_frames_emb = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size, 1).reshape(-1)
        emb = model.time_pos_embed(model.time_proj(num_frames_emb).to(dtype=hidden_states.dtype))[:, None, :]
        for block, temporal_block in pairs:
            parts = block.halves(hidden_states, encoder_hidden_states)
            if parts is None:
                spatial = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
                mixed = temporal_block(spatial + emb, num_frames=num_frames, encoder_hidden_states=time_context)
            else:
                spatial, mix_in, normed = _add_norm(*parts, temporal_block.block.norm_in, True, emb,
                                                    height * width, 1, keep_first=True)
                mixed = temporal_block(mix_in, num_frames=num_frames, encoder_hidden_states=time_context,
                                       normed=normed)
            hidden_states = model.time_mixer(x_spatial=spatial, x_temporal=mixed,
                                             image_only_indicator=image_only_indicator)
        hidden_states = model.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output = hidden_states + residual
        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


def _add_norm(x: torch.Tensor, residual: torch.Tensor, norm: torch.nn.Module, fused: bool,
              c: torch.Tensor | None = None, c_outer: int = 1, c_inner: int = 1, keep_first: bool = False):
    """(s, norm(s)) for s = x + residual, then + c, where c holds one row for each c_inner rows of every c_outer
    (s as [groups, c_outer / c_inner, c_inner, C] plus c as [groups, 1, c_inner, C]); with `keep_first` and a c,
    (x + residual, s, norm(s)). With `fused`, on CUDA in fp16/bf16, as one Triton kernel (the same sums, normalised
    in float32 as torch's layer norm is)."""
    shape = x.shape
    channels = shape[-1]
    keep_first = keep_first and c is not None
    if fused and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and type(norm) is torch.nn.LayerNorm \
            and norm.weight is not None and norm.bias is not None:
        flat = [t.reshape(-1, channels).contiguous() if t is not None else None for t in (x, residual, c)]
        args = (flat[0], flat[1], norm.weight, norm.bias, norm.eps, flat[2], c_outer, c_inner)
        outs = _add_add_layer_norm_op(*args) if keep_first else _add_layer_norm_op(*args)
        return tuple(t.view(shape) for t in outs)
    first = s = x + residual
    if c is not None:
        s = (s.view(-1, c_outer // c_inner, c_inner, channels) + c.view(-1, 1, c_inner, channels)).view(shape)
    return (first, s, norm(s)) if keep_first else (s, norm(s))


def fused_add_layer_norms(unet: torch.nn.Module) -> int:
    """Compute the layer norms after residual adds with the Triton one-pass kernel: in every FrameMajorTemporalBlock
    two, in every BasicTransformerBlock FusedNormTransformerBlock covers its feed-forward norm, and where a
    TransformerSpatioTemporalModel's blocks are both, the temporal block's first (FusedNormSpatioTemporalTransformer).
    Returns how many norms changed (0 when already applied)."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    count = 0
    for m in unet.modules():
        if isinstance(m, FrameMajorTemporalBlock) and not m.fused_norms:
            m.fused_norms = True
            count += 2
    count += _replace_children(unet, lambda child, parent: (FusedNormTransformerBlock.suits(child)
                                                            and not isinstance(parent, FusedNormTransformerBlock)),
                               FusedNormTransformerBlock)

    def covered(child, parent) -> bool:
        return (type(child) is TransformerSpatioTemporalModel
                and not isinstance(parent, FusedNormSpatioTemporalTransformer)
                and all(isinstance(b, FusedNormTransformerBlock) and isinstance(t, FrameMajorTemporalBlock)
                        for b, t in zip(child.transformer_blocks, child.temporal_transformer_blocks)))

    pairs = []  # each wrapped model's block pairs: one norm each

    def wrap(model):
        pairs.append(len(model.transformer_blocks))
        return FusedNormSpatioTemporalTransformer(model)

    _replace_children(unet, covered, wrap)
    return count + sum(pairs)


def triton_unavailable() -> str | None:
    """Why renderer/triton_kernels.py cannot run here, or None when it can (CUDA, Hopper or newer, Triton)."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability(0) < (9, 0):
        return "needs TMA (compute capability 9.0 or newer)"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    return None


GEGLU_GROUP = 64  # rows of value, then of gate, in FusedGEGLU's interleaved projection


def interleave_geglu(weight: torch.Tensor, bias: torch.Tensor | None):
    """A GEGLU projection's [value; gate] rows (and bias) reordered as groups of GEGLU_GROUP value rows, each followed
    by the matching gate rows. A missing bias becomes zeros."""
    n2, k = weight.shape
    if bias is None:
        bias = weight.new_zeros(n2)
    w = weight.reshape(2, n2 // (2 * GEGLU_GROUP), GEGLU_GROUP, k).transpose(0, 1)
    b = bias.reshape(2, n2 // (2 * GEGLU_GROUP), GEGLU_GROUP).transpose(0, 1)
    return w.reshape(n2, k).contiguous(), b.reshape(n2).contiguous()


# Opaque ops to torch.compile: Inductor calls the Triton kernels as extern kernels, on contiguous inputs.
@torch.library.custom_op("svdrender::geglu", mutates_args=())
def _geglu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    from renderer import triton_kernels

    return triton_kernels.geglu(x, weight, bias, GEGLU_GROUP)


@_geglu_op.register_fake
def _geglu_op_fake(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0] // 2))


@torch.library.custom_op("svdrender::temporal_conv", mutates_args=())
def _temporal_conv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, positions: int) -> torch.Tensor:
    from renderer import triton_kernels

    return triton_kernels.temporal_conv(x, weight, bias, positions)


@_temporal_conv_op.register_fake
def _temporal_conv_op_fake(x, weight, bias, positions):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0] // 3))


@torch.library.custom_op("svdrender::short_attention", mutates_args=())
def _short_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    from renderer import triton_kernels

    return triton_kernels.short_attention(q, k, v, heads, out=_attention_output(q))


@_short_attention_op.register_fake
def _short_attention_op_fake(q, k, v, heads):
    return _attention_output(q)


@torch.library.custom_op("svdrender::add_layer_norm", mutates_args=())
def _add_layer_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                       c: torch.Tensor | None, c_outer: int, c_inner: int) -> tuple[torch.Tensor, torch.Tensor]:
    from renderer import triton_kernels

    return triton_kernels.add_layer_norm(x, residual, weight, bias, eps, c, c_outer, c_inner)


@_add_layer_norm_op.register_fake
def _add_layer_norm_op_fake(x, residual, weight, bias, eps, c, c_outer, c_inner):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("svdrender::add_add_layer_norm", mutates_args=())
def _add_add_layer_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           eps: float, c: torch.Tensor, c_outer: int, c_inner: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from renderer import triton_kernels

    return triton_kernels.add_layer_norm(x, residual, weight, bias, eps, c, c_outer, c_inner, keep_first=True)


@_add_add_layer_norm_op.register_fake
def _add_add_layer_norm_op_fake(x, residual, weight, bias, eps, c, c_outer, c_inner):
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)


def _attention_output(q: torch.Tensor) -> torch.Tensor:
    # [B, P, F, C] like q, in q's order of sequences and frames: frame-major q, frame-major output.
    if q.stride(2) > q.stride(1):
        return q.new_empty(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).transpose(1, 2)
    return q.new_empty(q.shape)


class FusedGEGLU(torch.nn.Module):
    """diffusers' GEGLU (`h * gelu(gate)`, `[h, gate] = proj(x)`) as one Triton GEMM that writes only the product.

    The projection's weight is stored interleaved (interleave_geglu), replacing the original, so no memory
    is added. Same function; the product is rounded once where diffusers rounds gelu(gate) and the product
    separately. Inputs other than fp16/bf16 on CUDA take the same interleaved weights through torch.
    """

    def __init__(self, geglu: torch.nn.Module):
        super().__init__()
        weight, bias = interleave_geglu(geglu.proj.weight.detach(), geglu.proj.bias)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            out = _geglu_op(x.contiguous(), self.weight, self.bias)
        else:
            pairs = torch.nn.functional.linear(x, self.weight, self.bias).unflatten(-1, (-1, 2, GEGLU_GROUP))
            out = (pairs[:, :, 0] * torch.nn.functional.gelu(pairs[:, :, 1])).flatten(1)
        return out.reshape(*shape[:-1], out.shape[-1])


def fused_geglus(module: torch.nn.Module) -> int:
    """Replace every diffusers GEGLU under `module` whose sizes suit the kernel with FusedGEGLU; returns how many."""
    from diffusers.models.activations import GEGLU

    def wanted(child, parent):
        return (type(child) is GEGLU and child.proj.in_features % 8 == 0
                and child.proj.out_features % (2 * GEGLU_GROUP) == 0)

    return _replace_children(module, wanted, FusedGEGLU)


class TritonTemporalConv(torch.nn.Module):
    """A (3, 1, 1) Conv3d with padding (1, 0, 0) as renderer/triton_kernels.py's implicit GEMM, on channels-last data.

    The (B, C, F, H, W) input is handed over as (B, F·H·W, C): under torch.compile the producer (SVD's GroupNorm +
    SiLU) writes that layout directly, and the output goes back as a (B, C, F, H, W) view of it. Same arithmetic as
    cuDNN, in another order of summation. Off CUDA (or in float32) it runs the same weights through conv3d.
    """

    def __init__(self, conv: torch.nn.Conv3d):
        super().__init__()
        w = conv.weight.detach()[..., 0, 0]  # [CO, CI, 3]
        self.taps = torch.nn.Parameter(w.permute(2, 0, 1).reshape(3 * w.shape[0], w.shape[1]).contiguous(),
                                       requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
        self.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)):
            weight = self.taps.unflatten(0, (3, -1)).permute(1, 2, 0)[..., None, None]
            return torch.nn.functional.conv3d(x, weight, self.bias, padding=(1, 0, 0))
        b, c, f, h, w = x.shape
        rows = x.permute(0, 2, 3, 4, 1).reshape(b, f * h * w, c).contiguous()
        out = _temporal_conv_op(rows, self.taps, self.bias, h * w)
        return out.view(b, f, h, w, -1).permute(0, 4, 1, 2, 3)


def triton_temporal_convs(module: torch.nn.Module) -> int:
    """Replace every (3, 1, 1) Conv3d with padding (1, 0, 0) and channels divisible by 8 with TritonTemporalConv."""
    def wanted(child, parent):
        return (_is_temporal_conv(child) and child.kernel_size[0] == 3 and child.padding[0] == 1
                and child.in_channels % 8 == 0 and child.out_channels % 8 == 0)

    return _replace_children(module, wanted, TritonTemporalConv)


def check_triton_kernels(device: str = "cuda") -> str | None:
    """Run each kernel once on small random inputs against torch; None when they agree, else what went wrong.

    A Triton or driver that cannot build them (an older Triton without tensor descriptors, say) is found here, at
    load, instead of in the middle of a batch.
    """
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import TemporalBasicTransformerBlock

    try:
        with torch.no_grad():
            gen = torch.Generator(device).manual_seed(0)
            geglu = GEGLU(64, 128).to(device, torch.float16)
            x = torch.randn(300, 64, device=device, dtype=torch.float16, generator=gen)
            fused = FusedGEGLU(geglu)
            if not torch.allclose(fused(x).float(), geglu(x).float(), atol=2e-2, rtol=2e-2):
                return "the fused GEGLU kernel disagrees with diffusers' GEGLU"
            conv = torch.nn.Conv3d(32, 48, (3, 1, 1), padding=(1, 0, 0)).to(device, torch.float16)
            v = torch.randn(2, 32, 5, 4, 6, device=device, dtype=torch.float16, generator=gen)
            if not torch.allclose(TritonTemporalConv(conv)(v).float(), conv(v).float(), atol=2e-2, rtol=2e-2):
                return "the temporal convolution kernel disagrees with Conv3d"
            block = TemporalBasicTransformerBlock(128, 128, 2, 64, cross_attention_dim=32).to(device, torch.float16)
            x = torch.randn(2 * 25, 6, 128, device=device, dtype=torch.float16, generator=gen)  # 2 × 25 frames × 6
            context = torch.randn(2 * 6, 1, 32, device=device, dtype=torch.float16, generator=gen)
            frame_major = FrameMajorTemporalBlock(block)(x, 25, context)
            if not torch.allclose(frame_major.float(), block(x, 25, context).float(), atol=2e-2, rtol=2e-2):
                return "the short-sequence attention kernel's temporal block disagrees with diffusers'"
            norm = torch.nn.LayerNorm(320).to(device, torch.float16)
            torch.nn.init.normal_(norm.weight, generator=gen)
            torch.nn.init.normal_(norm.bias, generator=gen)
            a, r = (torch.randn(2 * 25 * 6, 320, device=device, dtype=torch.float16, generator=gen) for _ in "ar")
            for c, outer, inner in ((None, 1, 1), (torch.randn(2 * 25, 320, device=device, dtype=torch.float16,
                                                               generator=gen), 6, 1),
                                    (torch.randn(2 * 6, 320, device=device, dtype=torch.float16, generator=gen),
                                     25 * 6, 6)):
                fused = _add_norm(a, r, norm, True, c, outer, inner, keep_first=True)
                plain = _add_norm(a, r, norm, False, c, outer, inner, keep_first=True)
                if not all(torch.allclose(f.float(), p.float(), atol=2e-2, rtol=2e-2) for f, p in zip(fused, plain)):
                    return "the add + layer norm kernel disagrees with torch"
    except Exception as exc:  # any failure to build or run the kernels means: do not use them
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


class CudaGraphCall:
    """Calls `fn` through one captured CUDA graph per distinct input signature (shapes, dtypes, other arguments).

    A compiled UNet step is ~1,500 kernel launches; replaying them as a graph leaves no launch gaps on the GPU. Each
    call copies its tensors into the graph's static inputs and returns the graph's static output, which the next call
    overwrites: the pipeline consumes each step's output before the next step, as SVD's loop does. Calls with
    anything but CUDA tensors and hashable values, or while another capture runs, go straight to `fn`.
    """

    MAX_GRAPHS = 4  # each holds its own memory pool (a UNet step's activations)

    def __init__(self, fn):
        self.fn = fn
        self.graphs: dict = {}

    def __call__(self, *args, **kwargs):
        names = tuple(kwargs)
        values = list(args) + [kwargs[k] for k in names]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if not tensors or any(not t.is_cuda for t in tensors) or torch.cuda.is_current_stream_capturing():
            return self.fn(*args, **kwargs)
        key = (len(args), names, torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
               tuple((tuple(v.shape), v.stride(), v.dtype, v.device) if isinstance(v, torch.Tensor) else v
                     for v in values))
        try:
            entry = self.graphs.get(key)
        except TypeError:  # an unhashable argument
            return self.fn(*args, **kwargs)
        if entry is None:
            if len(self.graphs) >= self.MAX_GRAPHS:  # an argument that changes every call: graphs would not pay
                return self.fn(*args, **kwargs)
            entry = self.graphs[key] = self._capture(values, len(args), names)
        static, graph, out = entry
        for dst, src in zip(static, values):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)
        graph.replay()
        return out

    def _capture(self, values, nargs, names):
        static = [_same_kind_clone(v) if isinstance(v, torch.Tensor) else v for v in values]

        def call():
            return self.fn(*static[:nargs], **dict(zip(names, static[nargs:])))

        # Warm up on a side stream first, as CUDA graph capture requires (the first call may also compile).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = call()
        return static, graph, out


def _same_kind_clone(t: torch.Tensor) -> torch.Tensor:
    # An inference tensor where the original is one and a normal tensor where not: torch.compile guards on it.
    with torch.inference_mode(t.is_inference()):
        return t.clone()


def cuda_graph_calls(module: torch.nn.Module) -> bool:
    """Route `module(...)` through CudaGraphCall (around its compiled call, if compiled); False if already routed.

    Uses nn.Module's `_compiled_call_impl` hook, which `module.compile()` sets and `__call__` prefers.
    """
    if isinstance(getattr(module, "_compiled_call_impl", None), CudaGraphCall):
        return False
    module._compiled_call_impl = CudaGraphCall(module._compiled_call_impl or module._call_impl)
    return True


def drop_cuda_graphs(module: torch.nn.Module) -> bool:
    """Undo cuda_graph_calls and free its graphs (before a rewrite that a captured graph would not see)."""
    graphed = getattr(module, "_compiled_call_impl", None)
    if not isinstance(graphed, CudaGraphCall):
        return False
    module._compiled_call_impl = None if graphed.fn == module._call_impl else graphed.fn
    graphed.graphs.clear()
    return True


class RowChunkedFeedForward(torch.nn.Module):
    """A per-token feed-forward run on at most `rows` tokens at a time, into one preallocated output.

    Exact, since every token is independent. diffusers' enable_forward_chunking slices the temporal blocks along the
    frame axis into strided views; with model offload that ran 6x slower per step, bmm taking 70% of the GPU time
    (docs/performance.md). Every chunk here is a contiguous block of rows: one plain GEMM each.
    """

    def __init__(self, ff: torch.nn.Module, rows: int):
        super().__init__()
        self.ff = ff
        self.rows = rows

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        if flat.shape[0] <= self.rows:
            return self.ff(hidden_states, *args, **kwargs)
        out = None
        for start in range(0, flat.shape[0], self.rows):
            part = self.ff(flat[start : start + self.rows], *args, **kwargs)
            if out is None:
                out = part.new_empty(flat.shape[0], part.shape[-1])
            out[start : start + part.shape[0]] = part
        return out.reshape(*hidden_states.shape[:-1], out.shape[-1])


def chunk_feed_forwards(module: torch.nn.Module, max_bytes: int = FEED_FORWARD_CHUNK_BYTES) -> int:
    """Wrap every diffusers FeedForward under `module` in RowChunkedFeedForward; returns how many."""
    from diffusers.models.attention import FeedForward

    def chunked(ff):
        widest = max(m.out_features for m in ff.modules() if isinstance(m, torch.nn.Linear))
        itemsize = next(ff.parameters()).element_size()
        return RowChunkedFeedForward(ff, max(1, max_bytes // (widest * itemsize)))

    return _replace_children(
        module, lambda child, parent: isinstance(child, FeedForward) and not isinstance(parent, RowChunkedFeedForward),
        chunked)


def one_sample_at_a_time(unet: torch.nn.Module) -> bool:
    """Make `unet` run a batch one sample at a time and concatenate the outputs; False if it already does.

    Exact: in SVD's UNet no layer mixes batch samples (the temporal layers mix the frames of one sample), so the CFG
    pair gives the same output separately, with half the activation memory. Patched on the instance, before
    offload hooks wrap it.
    """
    if getattr(unet, "_svdrender_one_sample_at_a_time", False):
        return False
    forward = unet.forward

    def sample_by_sample(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        if sample.shape[0] == 1:
            return forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        per_sample = torch.is_tensor(timestep) and timestep.ndim > 0 and timestep.numel() > 1
        out = torch.cat([
            forward(sample[i : i + 1], timestep[i : i + 1] if per_sample else timestep,
                    encoder_hidden_states[i : i + 1], added_time_ids[i : i + 1], return_dict=False)[0]
            for i in range(sample.shape[0])
        ])
        if return_dict:
            from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

            return UNetSpatioTemporalConditionOutput(sample=out)
        return (out,)

    unet.forward = sample_by_sample
    unet._svdrender_one_sample_at_a_time = True
    return True


def _is_temporal_conv(m: torch.nn.Module) -> bool:
    return (
        type(m) is torch.nn.Conv3d
        and m.kernel_size[1:] == (1, 1)
        and m.stride == (1, 1, 1)
        and m.dilation == (1, 1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
        and tuple(m.padding[1:]) == (0, 0)
    )


def temporal_convs_as_2d(module: torch.nn.Module) -> int:
    """Replace every (k, 1, 1) Conv3d under `module` with TemporalConvAs2d; returns how many."""
    return _replace_children(module, lambda child, parent: _is_temporal_conv(child), TemporalConvAs2d)


def _replace_children(module: torch.nn.Module, wanted, make) -> int:
    """Replace every submodule `child` of `module` for which wanted(child, its parent) holds with make(child);
    returns how many. The matches are collected first, so a replacement is never itself visited."""
    targets = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if wanted(child, parent)]
    for parent, name, child in targets:
        setattr(parent, name, make(child))
    return len(targets)


_SDPA_BACKENDS = {
    "cudnn": "CUDNN_ATTENTION",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


def call_context(settings: PerformanceSettings) -> contextlib.AbstractContextManager:
    """Context to hold around every pipeline call: it puts the chosen SDPA backend first (a no-op off CUDA).

    The other backends stay enabled behind it, so shapes the chosen kernel cannot handle still run.
    """
    if settings.profile == "off" or settings.attention_backend == "auto" or not torch.cuda.is_available():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    first = getattr(SDPBackend, _SDPA_BACKENDS[settings.attention_backend])
    rest = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel([first] + [b for b in rest if b != first], set_priority=True)


def effective_decode_chunk_size(settings: PerformanceSettings, requested: int | None) -> int | None:
    """The decode chunk size to pass: the profile's override if it sets one, else the job's own.

    SVD's temporal decoder mixes frames within a chunk, so a different chunk size changes the frames slightly; only
    the `low` profile overrides it, to fit in memory.
    """
    return settings.decode_chunk_size if settings.decode_chunk_size is not None else requested


def frames_to_uint8(video: torch.Tensor):
    """[F, C, H, W] frames in [0, 1] (pipeline output_type="pt") → numpy uint8 [F, H, W, C], converted on the device.

    Rounds exactly as diffusers' PIL path does ((x * 255).round() in float32), so the bytes match output_type="pil",
    while moving a quarter of the bytes off the GPU and skipping the per-frame PIL objects.
    """
    frames = (video.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def describe_device() -> tuple[str, float]:
    """(device name, total VRAM in GiB) of CUDA device 0, or ("cpu", 0.0) without one."""
    if not torch.cuda.is_available():
        return "cpu", 0.0
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / 2**30
