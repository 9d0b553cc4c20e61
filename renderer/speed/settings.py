"""What each performance profile turns on: torch-free settings, resolved from a profile name and the recipe's or
command line's explicit choices. renderer/speed/runtime.py applies them to a loaded pipeline.

`fast`'s pieces were judged by an ablation run (benchmarks/ablation.py; the numbers, and which pieces it did not
cover, are in benchmarks/README.md); pieces that did not beat their library alternative or the noise were deleted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

from renderer.errors import UsageError
from renderer.speed.profiles import PROFILES, JobWork, Shape, choose_auto, compile_cache_dir

DTYPES = ("float16", "bfloat16", "float32")
ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")
CPU_OFFLOAD_MODES = ("none", "model", "sequential")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")

# Decoding 8 frames at a time peaks at 11.0 GiB even with offloading; 4 keeps `low` at 6.8 GiB reserved (2: 6.1 GiB,
# and slower). The temporal decoder mixes frames within a chunk, so this changes the frames (benchmarks/README.md).
LOW_DECODE_CHUNK_SIZE = 4


@dataclass(frozen=True)
class PerformanceSettings:
    """How the engine runs the pipeline; `profile` names the preset these values came from."""

    profile: str = "off"
    dtype: str = "float32"
    compile: bool = False
    compile_mode: str = "default"
    compile_vae: bool = False
    # Compile the UNet's repeated blocks (diffusers' regional compilation) instead of the whole UNet: each distinct
    # block shape compiles once and is reused.
    compile_regions: bool = False
    compile_cache_dir: str | None = None
    attention_backend: str = "auto"
    cross_attention_shortcut: bool = False
    channel_stats_group_norm: bool = False
    efficient_temporal_attention: bool = False
    fused_geglu: bool = False
    fp32_vae_encoder: bool = False
    decode_chunk_size: int | None = None
    cpu_offload: str = "none"
    forward_chunking: bool = False
    unet_one_sample_at_a_time: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain data for manifests."""
        return asdict(self)


def profile_settings(profile: str, device_name: str = "cpu", total_vram_gib: float = 0.0,
                     work: list[JobWork] | None = None,
                     warm: Callable[[Shape], bool] = lambda shape: False) -> PerformanceSettings:
    """The named profile's settings on this device; `auto` picks one from the VRAM, the jobs and the compile cache's
    state (`warm`: whether it holds compiled code for a shape; profiles.choose_auto)."""
    if profile not in PROFILES:
        raise UsageError(f"unknown performance profile {profile!r}; choose one of {', '.join(PROFILES)}")
    on_gpu = total_vram_gib > 0 and not device_name.lower().startswith("cpu")
    if not on_gpu:
        # Nothing here speeds up the CPU path and fp16 is slow or unsupported there: run plain float32 diffusers.
        return PerformanceSettings(profile="off", dtype="float32")
    if profile == "auto":
        profile = choose_auto(total_vram_gib, work, warm=warm).profile
    if profile == "off":
        return PerformanceSettings(profile="off", dtype="float16")
    if profile == "low":
        return PerformanceSettings(profile="low", dtype="float16", cpu_offload="model", forward_chunking=True,
                                   unet_one_sample_at_a_time=True, cross_attention_shortcut=True,
                                   decode_chunk_size=LOW_DECODE_CHUNK_SIZE)
    # `balanced` keeps frames bit-identical to plain diffusers: only exact rewrites.
    balanced = PerformanceSettings(profile="balanced", dtype="float16", cross_attention_shortcut=True,
                                   fp32_vae_encoder=True)
    if profile == "balanced":
        return balanced
    # The per-channel GroupNorm and the memory-efficient temporal attention pay off compiled only (slower eager);
    # they and the GEGLU kernel change rounding (within 2/255 of plain diffusers' frames). The GEGLU kernel needs
    # Hopper or newer and is skipped, and recorded as skipped, elsewhere.
    return replace(balanced, profile="fast", channel_stats_group_norm=True, efficient_temporal_attention=True,
                   fused_geglu=True, compile=True, compile_vae=True, compile_cache_dir=compile_cache_dir())


def resolve_settings(profile: str = "auto", device_name: str = "cpu", total_vram_gib: float = 0.0,
                     work: list[JobWork] | None = None, warm: Callable[[Shape], bool] = lambda shape: False,
                     **overrides: Any) -> PerformanceSettings:
    """A profile's settings with the recipe's or command line's explicit values on top; None values are ignored."""
    settings = profile_settings(profile, device_name, total_vram_gib, work, warm)
    known = {f.name for f in fields(PerformanceSettings)} - {"profile"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown performance setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    validate_settings(settings)
    return settings


def validate_settings(settings: PerformanceSettings) -> None:
    """Raise UsageError for a value outside its allowed set."""
    choices = {"dtype": DTYPES, "attention_backend": ATTENTION_BACKENDS, "cpu_offload": CPU_OFFLOAD_MODES,
               "compile_mode": COMPILE_MODES}
    for name, allowed in choices.items():
        value = getattr(settings, name)
        if value not in allowed:
            raise UsageError(f"performance.{name}: {value!r} is not one of {', '.join(allowed)}")
    if settings.decode_chunk_size is not None and settings.decode_chunk_size < 1:
        raise UsageError(f"performance.decode_chunk_size: must be at least 1, got {settings.decode_chunk_size}")
    if settings.compile and settings.cpu_offload != "none":
        raise UsageError("performance: compile and cpu_offload cannot be combined; offloading hooks defeat compilation")


def effective_decode_chunk_size(settings: PerformanceSettings, requested: int | None) -> int | None:
    """The decode chunk size to pass: the profile's override if it sets one, else the job's own.

    SVD's temporal decoder mixes frames within a chunk, so a different chunk size changes the frames slightly; only
    the `low` profile overrides it, to fit in memory.
    """
    return settings.decode_chunk_size if settings.decode_chunk_size is not None else requested
