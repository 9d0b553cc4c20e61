"""Performance profiles and how `auto` chooses among them: torch-free data and arithmetic, read by the CLI, doctor,
the schema test and the engine's speed code (renderer/speed/settings.py holds what each profile turns on)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

PROFILES = ("auto", "fast", "balanced", "low", "off")
DEFAULT_PROFILE = "auto"

# Full-size SVD-XT peaks at 15.1 GiB allocated plain; below this much VRAM `auto` takes the offloading `low` profile
# (5.6 GiB allocated, 6.8 GiB reserved) instead.
FAST_MIN_VRAM_GIB = 20.0

# What compiling costs and saves, measured through the CLI on one H100 with full-size SVD-XT (1024x576, 25 frames,
# Euler 25 steps; docs/performance.md): a video's GPU path takes 19.26 s under `off` and 10.10 s under `fast`.
# The first job takes 22.7 s under `off`; under `fast` with an empty compile cache it took 134.3 s on a machine that
# had just run the GPU tests, and more than 160 s on a freshly started one (its 1-job command had not finished after
# 200 s). So the cold cost is the earlier `fast`'s fresh-machine figure on an H200 (214.6 s against 24.5 s), an
# estimate on the safe side, and the warm one that `fast`'s (42.6 s against 24.5 s), an upper bound: today's
# compiles less. Savings scale with UNet calls and pixels x frames; compile time hardly depends on either.
REFERENCE_PIXEL_FRAMES = 1024 * 576 * 25
FAST_SAVES_PER_CALL_S = (19.26 - 10.10) / 25
COMPILE_COLD_S = 214.6 - 24.5
COMPILE_WARM_S = 42.6 - 24.5
# Compile only when the expected saving beats the expected compile time by this factor, so that an estimate that
# is somewhat off still leaves `auto` no slower than `balanced`.
COMPILE_MARGIN = 1.25


@dataclass(frozen=True)
class Shape:
    """The tensor shapes a compiled pipeline is specialised for: each new shape compiles again."""

    width: int
    height: int
    num_frames: int


@dataclass(frozen=True)
class JobWork:
    """What one job asks of the UNet."""

    shape: Shape
    unet_calls: int


@dataclass(frozen=True)
class AutoChoice:
    """The profile `auto` stands for, and why (recorded in every sidecar)."""

    profile: str
    reason: str


@dataclass(frozen=True)
class PerformanceRequest:
    """What the recipe's `performance:` block and the command line ask of the speed code (schema: recipe
    `performance`; tests/test_registries.py checks the fields match it). None leaves a choice to the profile."""

    profile: str = DEFAULT_PROFILE
    compile: bool | None = None
    compile_regions: bool | None = None
    compile_cache_dir: str | None = None
    attention_backend: str = "auto"
    cpu_offload: str | None = None

    def with_choices(self, **choices: object) -> "PerformanceRequest":
        """This request with the command line's explicit choices (None: not given) on top."""
        return replace(self, **{k: v for k, v in choices.items() if v is not None})

    def overrides(self) -> dict[str, object]:
        """The explicit choices on top of the profile, as keyword arguments of the speed code's settings."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "profile"}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class PerformanceRecord:
    """What the speed code did to a loaded pipeline, for sidecars: the profile, its settings, each step applied or
    skipped (with why), and `auto`'s choice when the profile was auto."""

    profile: str
    settings: Mapping[str, object]
    applied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    compile_cache_dir: str | None = None
    auto: AutoChoice | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"profile": self.profile, "settings": dict(self.settings),
                                   "applied": list(self.applied), "skipped": list(self.skipped)}
        if self.compile_cache_dir:
            data["compile_cache_dir"] = self.compile_cache_dir
        if self.auto is not None:
            data["auto"] = asdict(self.auto)
        return data


def choose_auto(total_vram_gib: float, work: Iterable[JobWork] | None = None,
                warm: Callable[[Shape], bool] = lambda shape: False) -> AutoChoice:
    """The profile `auto` stands for on a GPU with this much memory, for these jobs: `fast` only where compiling is
    expected to pay for itself (by the compile cache's state for each shape), else `balanced`; `low` below
    FAST_MIN_VRAM_GIB."""
    if total_vram_gib < FAST_MIN_VRAM_GIB:
        return AutoChoice("low", f"{total_vram_gib:.0f} GiB of GPU memory is below the {FAST_MIN_VRAM_GIB:g} GiB "
                                 "that full-size SVD-XT needs without CPU offload")
    if work is None:
        return AutoChoice("fast", "no job list given: assuming a batch long enough to repay compiling")
    work = list(work)
    saving = sum(FAST_SAVES_PER_CALL_S * j.unet_calls * j.shape.width * j.shape.height * j.shape.num_frames
                 / REFERENCE_PIXEL_FRAMES for j in work)
    shapes = {j.shape for j in work}
    warm_shapes = {s for s in shapes if warm(s)}
    cost = COMPILE_WARM_S * len(warm_shapes) + COMPILE_COLD_S * (len(shapes) - len(warm_shapes))
    cache = ("warm" if warm_shapes == shapes else "empty" if not warm_shapes else "partly warm")
    numbers = (f"{len(work)} job{'s' if len(work) != 1 else ''} would save about {saving:.0f} s against about "
               f"{cost:.0f} s of compiling ({cache} compile cache, {len(shapes)} shape{'s' if len(shapes) != 1 else ''})")
    if work and saving >= COMPILE_MARGIN * cost:
        return AutoChoice("fast", numbers)
    return AutoChoice("balanced", f"not compiling: {numbers}")


def compile_cache_dir() -> str:
    """Where compiled kernels persist between runs: $SVDRENDER_CACHE or $XDG_CACHE_HOME/svdrender, then torch-compile."""
    root = os.environ.get("SVDRENDER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "svdrender")
    return os.path.join(root, "torch-compile")


def warm_marker(cache_dir: str, shape: Shape, *, device_name: str, torch_version: str, svdrender_version: str,
                dtype: str, compile_mode: str) -> Path:
    """The file that says this cache holds compiled code for this shape on this GPU, torch and svdrender."""
    key = {"shape": asdict(shape), "device": device_name, "torch": torch_version, "svdrender": svdrender_version,
           "dtype": dtype, "compile_mode": compile_mode}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "svdrender-warm" / f"{digest}.json"
