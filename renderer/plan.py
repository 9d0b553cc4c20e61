"""Recipe → Plan: the ordered jobs with resolved settings, output paths, cache keys and skip decisions. Pure Python."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .recipe import ModelSpec, Recipe, Settings, resolve_settings

# Bump when the bytes svdrender writes for the same frames change (encoder settings, sidecar layout).
OUTPUT_FORMAT_VERSION = 1
VIDEO_EXTENSIONS = {"mp4": "mp4", "webm": "webm", "gif": "gif", "webp": "webp"}


@dataclass(frozen=True)
class Job:
    """One render: item × preset × seed, with everything needed to render and write it."""

    id: str
    item: str
    preset: str
    seed: int
    image: Path
    image_display: str
    image_sha256: str
    settings: Settings
    scheduler: dict = field(hash=False, compare=False)  # the mapping schedulers.build takes
    preset_description: str = ""
    outputs: dict = field(default_factory=dict, hash=False, compare=False)  # format → final path
    sidecar: Path = Path()
    cache_key: str = ""
    skip_reason: str | None = None

    @property
    def cost(self) -> int:
        """Relative GPU cost: UNet work ∝ frames × steps × pixels, doubled by classifier-free guidance."""
        s = self.settings
        cfg = 2 if s.max_guidance_scale > 1 else 1
        return s.num_frames * s.num_inference_steps * s.width * s.height * cfg


@dataclass(frozen=True)
class Plan:
    """Every job of a recipe, in render order."""

    recipe: Recipe
    jobs: tuple[Job, ...]

    @property
    def to_render(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if j.skip_reason is None)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(image_sha256: str, settings: Settings, scheduler: dict, model: ModelSpec, formats) -> str:
    """Hash of everything that determines a job's output bytes."""
    payload = {
        "image_sha256": image_sha256,
        "settings": asdict(settings),
        "scheduler": scheduler,
        "model": asdict(model),
        "formats": sorted(formats),
        "output_format_version": OUTPUT_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def job_paths(out_dir: Path, item: str, preset: str, seed: int, formats) -> tuple[dict, Path]:
    """`<dir>/<item>/<preset>/seed-<n>.<ext>` for each format (frames: a folder), and the sidecar path."""
    stem = out_dir / item / preset / f"seed-{seed}"
    outputs = {fmt: (stem if fmt == "frames" else stem.with_suffix("." + VIDEO_EXTENSIONS[fmt])) for fmt in formats}
    return outputs, stem.with_suffix(".json")


def skip_reason(job: Job) -> str | None:
    """Why a finished job can be skipped, or None when it must be rendered (missing, changed or corrupt)."""
    try:
        sidecar = json.loads(job.sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if sidecar.get("status") != "ok" or sidecar.get("cache_key") != job.cache_key:
        return None
    for entry in sidecar.get("files", []):
        path = job.sidecar.parent / entry["path"]
        try:
            if _file_sha256(path) != entry["sha256"]:
                return None
        except OSError:
            return None
    return "done: same settings, files intact"


def make_plan(recipe: Recipe, *, only: tuple[str, ...] = (), force: bool = False) -> Plan:
    """Resolve every item × preset × seed into a Job; `only` keeps jobs whose id or item matches."""
    jobs = []
    for item in recipe.items:
        image_sha = _file_sha256(item.image)
        for preset_name in item.presets:
            preset = recipe.presets[preset_name]
            settings = resolve_settings(recipe, preset, item)
            scheduler = preset.scheduler_spec(settings.num_inference_steps)
            for seed in item.seeds:
                job_id = f"{item.name}/{preset_name}/seed-{seed}"
                if only and not any(job_id == o or item.name == o or job_id.startswith(o.rstrip("/") + "/")
                                    for o in only):
                    continue
                outputs, sidecar = job_paths(recipe.output_dir, item.name, preset_name, seed, recipe.formats)
                job = Job(
                    id=job_id, item=item.name, preset=preset_name, seed=seed, image=item.image,
                    image_display=item.image_display, image_sha256=image_sha, settings=settings,
                    scheduler=scheduler, preset_description=preset.description, outputs=outputs, sidecar=sidecar,
                    cache_key=cache_key(image_sha, settings, scheduler, recipe.model, recipe.formats),
                )
                if not force:
                    reason = skip_reason(job)
                    if reason:
                        job = _with_skip(job, reason)
                jobs.append(job)
    return Plan(recipe=recipe, jobs=tuple(jobs))


def _with_skip(job: Job, reason: str) -> Job:
    from dataclasses import replace

    return replace(job, skip_reason=reason)


def plan_json(plan: Plan) -> dict:
    """The `svdrender plan --json` document."""
    return {
        "svdrender": __version__,
        "recipe": str(plan.recipe.path),
        "name": plan.recipe.name,
        "model": asdict(plan.recipe.model),
        "output_dir": str(plan.recipe.output_dir),
        "formats": list(plan.recipe.formats),
        "jobs": [
            {
                "id": j.id, "item": j.item, "preset": j.preset, "seed": j.seed, "image": str(j.image),
                "image_sha256": j.image_sha256, "settings": asdict(j.settings), "scheduler": j.scheduler,
                "outputs": {k: str(v) for k, v in j.outputs.items()}, "sidecar": str(j.sidecar),
                "cache_key": j.cache_key, "skip": j.skip_reason, "cost": j.cost,
            }
            for j in plan.jobs
        ],
    }
