"""Applying performance settings to a loaded SVD pipeline: the module rewrites, torch.compile and its cache, and the
per-call context. Only the engine imports this module; it touches no GPU until asked, so it imports and runs (as a
no-op) on a machine without one.

The engine's side of the contract:

    speed = resolve_settings(profile, device_name, vram_gib, work, warm=lambda shape: is_warm(shape, device_name))
    pipe = load(..., dtype=speed.dtype)                  # .to("cuda") as usual; offloading moves it back itself
    record = optimize_pipeline(pipe, speed)                # once, before the first job; record goes in sidecars
    for job in jobs:
        with torch.inference_mode(), call_context(speed):
            ...pipeline call...
        frames = frames_to_uint8(video)                    # on the GPU
        mark_warm(speed, shape, device_name)               # after a compiled job: later `auto` runs know
"""

from __future__ import annotations

import contextlib
import json
import os

import torch

from renderer.speed import rewrites
from renderer.speed.profiles import PerformanceRecord, Shape, compile_cache_dir, warm_marker
from renderer.speed.settings import PerformanceSettings, validate_settings


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

    # Each rewrite returns how many layers it changed: 0 means it was already applied.
    if settings.cross_attention_shortcut and (n := rewrites.single_token_cross_attention(pipe.unet)):
        did(f"single-token cross-attention shortcut in {n} layers")
    if settings.fused_geglu:
        from renderer.speed import geglu

        problem = geglu.triton_unavailable() or geglu.check_kernel()
        if problem is not None:
            skipped.append(f"fused_geglu: {problem}")
        elif n := geglu.fused_geglus(pipe.unet):
            did(f"fused Triton GEGLU projection in {n} feed-forwards")
    if settings.channel_stats_group_norm and (
        n := rewrites.channel_stats_group_norms(pipe.unet) + rewrites.channel_stats_group_norms(pipe.vae.decoder)
    ):
        did(f"{n} GroupNorms computed from per-channel statistics")
    if settings.efficient_temporal_attention and (n := rewrites.efficient_temporal_attention(pipe.unet)):
        did(f"memory-efficient SDPA kernel for {n} temporal self-attention layers")
    if settings.fp32_vae_encoder and rewrites.vae_encoder_in_float32(pipe.vae):
        did("vae encoder kept in float32 (no per-job upcast of the whole vae)")
    if settings.unet_one_sample_at_a_time and rewrites.one_sample_at_a_time(pipe.unet):
        did("unet runs the CFG pair one sample at a time")
    if settings.forward_chunking and (n := rewrites.chunk_feed_forwards(pipe.unet)):
        did(f"{n} unet feed-forwards chunked by rows (intermediates <= {rewrites.FEED_FORWARD_CHUNK_BYTES >> 20} MiB)")

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

    if settings.attention_backend != "auto":
        did(f"sdpa backend {settings.attention_backend} first (call_context)")
    if settings.decode_chunk_size is not None:
        did(f"decode_chunk_size {settings.decode_chunk_size}")
    return record()


def _compile_in_place(module: torch.nn.Module, mode: str, fullgraph: bool) -> bool:
    # Module.compile keeps the module object (config, hooks, .to()) and compiles lazily on the first call.
    if getattr(module, "_compiled_call_impl", None) is not None:
        return False
    options = {} if mode == "default" else {"mode": mode}
    module.compile(fullgraph=fullgraph, dynamic=False, **options)
    return True


# SVD's UNet repeats these at every resolution level; everything between them (down/upsamplers, embeddings, the
# skip concatenations) is a few cheap ops.
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
