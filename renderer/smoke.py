"""Smoke runs (`svdrender RECIPE --smoke`): every job of a real recipe, shrunk to seconds on a CPU.

A smoke run proves the recipe (items, presets, schedulers, seeds, formats) and the whole pipeline end to end without
the real model: the recipe is rewritten once, here, and everything after it (plan, engine, outputs, reports) runs
unchanged on the result.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import scheduler_presets
from .speed.profiles import PerformanceRequest
from .recipe import BUILTIN_TINY, ModelSpec, Preset, Recipe, model_defaults

# Small enough that product_shots.yaml (6 jobs) renders in well under a minute on 2 CPU cores
# (benchmarks/smoke_speed.py), large enough for the tiny model's two latent levels (64 px → 16 px latents).
# A crossfade takes frames from both ends, so it must fit in the smoke run's 4 frames.
SMOKE_SETTINGS = (("width", 64), ("height", 64), ("num_frames", 4), ("num_inference_steps", 2),
                  ("decode_chunk_size", None), ("crossfade_frames", 2))
SMOKE_MODEL = BUILTIN_TINY
SMOKE_SUFFIX = "-smoke"


def smoke_dir(output_dir: Path) -> Path:
    """Where a smoke run writes: next to the real output folder, never inside it (`renders/x` → `renders/x-smoke`)."""
    return output_dir.with_name(output_dir.name + SMOKE_SUFFIX)


def _without_smoke_keys(overrides: tuple[tuple[str, object], ...]) -> tuple[tuple[str, object], ...]:
    names = {k for k, _ in SMOKE_SETTINGS}
    return tuple((k, v) for k, v in overrides if k not in names)


def _smoke_preset(preset: Preset) -> Preset:
    """`preset` without its smoke keys; a ladder preset, which refuses fewer steps than its tested range, runs at the
    fewest steps it takes."""
    builtin = scheduler_presets.PRESETS.get(preset.scheduler)
    fewest = builtin.step_range[0] if builtin is not None and builtin.step_range else 0
    overrides = _without_smoke_keys(preset.overrides)
    if fewest > dict(SMOKE_SETTINGS)["num_inference_steps"]:
        overrides += (("num_inference_steps", fewest),)
    return replace(preset, overrides=overrides)


def smoke_recipe(recipe: Recipe) -> Recipe:
    """`recipe` as a smoke run renders it: the built-in tiny model, SMOKE_SETTINGS for every job, the output folder
    smoke_dir(output_dir), and no performance section (the tiny model runs on the CPU).

    Presets keep their schedulers and σ schedules and items their other settings, so every job of the recipe is
    still planned and rendered; a preset with an explicit σ list keeps that list's step count, and the draft / quick /
    fine ladder runs at the fewest steps it takes.
    """
    defaults = _without_smoke_keys(recipe.defaults) + SMOKE_SETTINGS
    presets = {name: _smoke_preset(p) for name, p in recipe.presets.items()}
    items = tuple(replace(i, overrides=_without_smoke_keys(i.overrides)) for i in recipe.items)
    model = ModelSpec(id=SMOKE_MODEL)
    origins = {**recipe.setting_origins, **{("defaults", k): "--smoke" for k, _ in SMOKE_SETTINGS}}
    return replace(recipe, model=model, output_dir=smoke_dir(recipe.output_dir), defaults=defaults, presets=presets,
                   items=items, performance=PerformanceRequest(), smoke=True, model_defaults=model_defaults(model, recipe.path.parent),
                   setting_origins=origins)
