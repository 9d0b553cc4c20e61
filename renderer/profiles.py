"""Performance profiles and the VRAM policy that `auto` follows: torch-free data, read by the CLI, doctor, the
schema test and the engine's speed code (renderer/performance.py holds what each profile does)."""

from __future__ import annotations

PROFILES = ("auto", "fast", "balanced", "low", "off")
DEFAULT_PROFILE = "auto"

# Full-size SVD-XT peaks at 15.1 GiB allocated plain and 10.1 GiB with `fast` (19.3 GiB reserved); below this much
# VRAM `auto` takes the offloading `low` profile (5.6 GiB allocated, 6.8 GiB reserved) instead.
FAST_MIN_VRAM_GIB = 20.0
# A cold start of `fast` costs ~215 s and a warm one (persistent cache) ~35 s, against ~8.8 s saved per video: with
# fewer jobs than this, `auto` does not compile.
COMPILE_MIN_JOBS = 4


def auto_profile(total_vram_gib: float, num_jobs: int | None = None) -> str:
    """The profile `auto` stands for on a GPU with this much memory, for a batch of this many jobs."""
    if total_vram_gib < FAST_MIN_VRAM_GIB:
        return "low"
    return "fast" if num_jobs is None or num_jobs >= COMPILE_MIN_JOBS else "balanced"
