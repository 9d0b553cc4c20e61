"""Recipe → Plan: the ordered jobs with resolved settings, output paths, cache keys and skip decisions. Pure Python."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from . import __version__, motion, scheduler_presets
from .layout import file_sha256, job_paths
from .paths import is_inside, local_model_path
from .records import CorruptRecord, read_sidecar
from .errors import UsageError
from .picks import narrow, read_picks
from .scheduler_presets import SchedulerChoice
from .recipe import ModelSpec, Recipe, Settings, load_recipe, resolve_settings, setting_sources, suggest
from .smoke import smoke_recipe

# Bump when the bytes svdrender writes for the same frames change (encoder settings, sidecar layout).
OUTPUT_FORMAT_VERSION = 1
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# How a changed cache-key input is named when `svdrender plan` says why a job renders again.
_INPUT_NAMES = {"image_sha256": "input image", "scheduler": "scheduler", "model": "model", "formats": "formats",
                "output_format_version": "svdrender's output format"}


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
    scheduler: SchedulerChoice
    preset_description: str = ""
    outputs: dict = field(default_factory=dict, hash=False, compare=False)  # format → final path
    sidecar: Path = Path()
    cache_key: str = ""
    cache_inputs: dict = field(default_factory=dict, hash=False, compare=False)  # what cache_key hashes
    skip_reason: str | None = None
    render_reason: str | None = None  # why it renders: new, changed, missing, corrupt, failed before, forced
    # Where each model setting's value came from (recipe.MODEL_SETTINGS → "recipe line 12", "known family: SVD").
    setting_sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def cost(self) -> int:
        """Relative GPU cost: UNet work ∝ frames × steps × pixels × segments, doubled by classifier-free guidance."""
        s = self.settings
        cfg = 2 if s.max_guidance_scale > 1 else 1
        return s.num_frames * s.num_inference_steps * s.width * s.height * cfg * s.segments

    @property
    def segment_seeds(self) -> tuple[int, ...]:
        """The seed of each segment the job renders (one for a job of one segment: its own)."""
        return tuple(segment_seed(self.seed, index) for index in range(self.settings.segments))

    @property
    def frame_count(self) -> int:
        """Frames the model makes for the job, over all its segments (before any loop or interpolation)."""
        return self.settings.frame_count


def segment_seed(seed: int, index: int) -> int:
    """The seed of segment `index` of a job seeded `seed`: `seed` itself for segment 0, so that a job of one segment
    renders as it always did; for a later one, the first 8 bytes of sha256(f"{seed}/{index}"), big-endian, modulo
    2**63 (a valid recipe seed). Not `seed + index`: segment 1 of seed 0 would draw the noise of seed 1's video."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


@dataclass(frozen=True)
class Plan:
    """Every job of a recipe, in render order."""

    recipe: Recipe
    jobs: tuple[Job, ...]
    model_revision: str | None = None  # what the model resolves to now; None: a hub revision not cached yet
    force: bool = False

    @property
    def to_render(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if j.skip_reason is None)


def model_revision(model: ModelSpec, base_dir: Path) -> str | None:
    """The exact model a render would load, without importing torch: "builtin", a local folder's fingerprint, or the
    commit a hub revision resolves to in the local Hugging Face cache (None when it is not cached yet)."""
    if model.is_builtin:
        return "builtin"
    local = local_model_path(model.id, base_dir)
    if local.is_dir():
        return "local:" + _folder_fingerprint(local)
    if _COMMIT.match(model.revision):
        return model.revision
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model.id, "model_index.json", revision=model.revision)
    return Path(found).parent.name if isinstance(found, str) else None


def _folder_fingerprint(folder: Path) -> str:
    """Configs (model_index.json, scheduler config, ...) by content; weights by size and modification time."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        mark = file_sha256(path) if path.suffix == ".json" else f"{stat.st_size}:{stat.st_mtime_ns}"
        digest.update(f"{path.relative_to(folder)}\0{mark}\n".encode())
    return digest.hexdigest()[:16]


def cache_inputs(job: Job, recipe: Recipe, revision: str | None) -> dict:
    """Everything that determines a job's output bytes, as JSON data (sidecars keep it to explain changes)."""
    payload = {
        "image_sha256": job.image_sha256,
        "seed": job.seed,
        "settings": _settings_inputs(job.settings),
        "scheduler": job.scheduler.as_json(),
        "model": {**_as_dict(recipe.model), "resolved_revision": revision},
        "formats": sorted(recipe.formats),
        "output_format_version": OUTPUT_FORMAT_VERSION,
    }
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


@lru_cache(maxsize=1024)
def _settings_inputs(settings: Settings) -> dict:
    """The settings as cache-key input: every SVD setting; `segments` only above 1 and the loop and output frame rate
    settings only as far as they change the written bytes (motion.Motion.cache_inputs), so that jobs finished before
    these settings existed stay done."""
    values = {k: v for k, v in _as_dict(settings).items()
              if k not in motion.SETTING_NAMES and not (k == "segments" and v == 1)}
    return {**values, **settings.motion.cache_inputs()}


@lru_cache(maxsize=1024)
def _as_dict(frozen) -> dict:
    # dataclasses.asdict is slow, and a recipe's jobs share few distinct settings (a plan of 1,000 jobs has to stay
    # well under a second); callers only read the result.
    return asdict(frozen)


def with_cache_key(job: Job, recipe: Recipe, revision: str | None) -> Job:
    """`job` keyed for model revision `revision` (after a load resolved one the plan could not)."""
    inputs = cache_inputs(job, recipe, revision)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return replace(job, cache_key=key, cache_inputs=inputs)


def decide(job: Job) -> Job:
    """`job` with its skip_reason (finished, same cache key, files intact) or its render_reason set."""
    reason = _render_reason(job)
    return replace(job, skip_reason=None if reason else "done: same settings, files intact", render_reason=reason)


def _render_reason(job: Job) -> str | None:
    try:
        sidecar = read_sidecar(job.sidecar)
    except FileNotFoundError:
        return "new"
    except CorruptRecord as exc:
        return f"sidecar corrupt: {exc}"
    if sidecar.job_id != job.id:
        return "sidecar corrupt: it records another job"
    if sidecar.status != "ok":
        return "previous run was interrupted" if sidecar.status == "interrupted" else f"previous run {sidecar.status}"
    if sidecar.cache_key != job.cache_key:
        return "changed: " + _changes(sidecar.cache_inputs, job.cache_inputs)
    return _outputs_problem(job, sidecar)


def _outputs_problem(job: Job, sidecar) -> str | None:
    """Why the job's expected outputs (paths from the plan, never from the sidecar) are not the ones its sidecar
    recorded, or None: each is a regular file inside the job's folder, of the recorded size and sha256."""
    folder = job.sidecar.parent
    out_dir = folder.parent.parent
    recorded = {}
    for file in sidecar.files:
        recorded.setdefault(file.format, []).append(file)
    for fmt, final in job.outputs.items():
        name = final.name
        files = recorded.get(fmt, [])
        if fmt == "frames":
            expected = [f for f in files if Path(f.path).parent == Path(name)]
            if not expected or len(expected) != len(files) or len(expected) != sidecar.frame_count:
                return f"output missing: {name}/"
            if not final.is_dir() or final.is_symlink():
                return f"output missing: {name}/"
        else:
            expected = [f for f in files if f.path == name]
            if len(expected) != 1:
                return f"output missing: {name}"
        for file in expected:
            path = folder / file.path
            try:
                info = path.lstat()
            except FileNotFoundError:
                return f"output missing: {file.path}"
            except OSError:
                return f"output unreadable: {file.path}"
            if not stat.S_ISREG(info.st_mode) or not is_inside(out_dir, path):
                return f"output corrupt: {file.path} is not a regular file"
            if info.st_size != file.bytes:
                return f"output corrupt: {file.path}"
            try:
                if file_sha256(path) != file.sha256:
                    return f"output corrupt: {file.path}"
            except OSError:
                return f"output unreadable: {file.path}"
    return None


def _changes(old, new: dict) -> str:
    """Which cache-key inputs differ, naming settings one by one."""
    if not isinstance(old, dict):
        return "cache key"
    changed = []
    for key, value in new.items():
        if old.get(key) == value:
            continue
        if key == "settings" and isinstance(old.get(key), dict):
            # Both sides' names: a loop setting or segments back at its default leaves the new inputs, but it changed.
            changed += [name for name in {**old[key], **value} if old[key].get(name) != value.get(name)]
        else:
            changed.append(_INPUT_NAMES.get(key, key))
    return ", ".join(changed) or "cache key"


def recheck(plan: Plan) -> Plan:
    """Decide again, against the sidecars on disk now, the jobs a plan renders (run once the output lock is held:
    another run may have finished some of them since the plan was made)."""
    if plan.force:
        return plan
    return replace(plan, jobs=tuple(job if job.skip_reason else decide(job) for job in plan.jobs))


def make_plan(recipe: Recipe, *, only: tuple[str, ...] = (), force: bool = False) -> Plan:
    """Resolve every item × preset × seed into a Job; `only` keeps jobs whose id or item matches."""
    jobs = []
    revision = model_revision(recipe.model, recipe.path.parent)
    for item in recipe.items:
        image_sha = file_sha256(item.image)
        for preset_name in item.presets:
            preset = recipe.presets[preset_name]
            settings = resolve_settings(recipe, preset, item)
            sources = setting_sources(recipe, preset, item)
            scheduler = preset.scheduler_choice(settings.num_inference_steps)
            # An explicit σ list sets the step count itself; settings (and cost, manifests) must say what runs.
            steps = scheduler_presets.resolved_steps(scheduler)
            if steps != settings.num_inference_steps:
                settings = replace(settings, num_inference_steps=steps)
                scheduler = scheduler.with_steps(steps)
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
                    setting_sources=sources,
                )
                job = with_cache_key(job, recipe, revision)
                jobs.append(replace(job, render_reason="forced (--force)") if force else decide(job))
    return Plan(recipe=recipe, jobs=tuple(jobs), model_revision=revision, force=force)


def plan_recipe(path: Path, *, model: str | None = None, out: Path | None = None, only=(), force: bool = False,
                check_images: bool = True, smoke: bool = False, picks: Path | None = None,
                preset: tuple[str, ...] = ()) -> Plan:
    """Load, validate and plan a recipe file, as `svdrender render/plan` and `renderer.render` do; `smoke` plans
    the recipe as renderer.smoke rewrites it; `picks` plans only the jobs of a picks file (with `preset`, each
    `NAME` or `FROM=NAME`: its items and seeds under those presets, see renderer.picks.narrow).

    An `only` entry that matches no job is a usage mistake (a typo would otherwise render nothing and exit 0).
    """
    if preset and picks is None:
        raise UsageError("--preset renders picked items and seeds with another preset; give the picks with "
                         "--picks PICKS.json")
    if picks is not None and only:
        raise UsageError("--only and --picks both choose the jobs to render; use one of them")
    recipe = load_recipe(path, model_override=model, out_override=out, check_images=check_images)
    if picks is not None:
        recipe = narrow(recipe, read_picks(picks), preset)
    if smoke:  # after narrowing: a smoke run shrinks the presets --preset brings in too
        recipe = smoke_recipe(recipe)
    plan = make_plan(recipe, only=tuple(only), force=force)
    matched = {o for o in only for j in plan.jobs if j.id == o or j.item == o or j.id.startswith(o + "/")}
    missing = [o for o in only if o not in matched]
    if missing:
        ids = [j.id for j in make_plan(recipe).jobs] + [i.name for i in recipe.items]
        raise UsageError(f"--only {missing[0]!r} matches no job of {path}{suggest(missing[0], ids)}")
    return plan


def plan_json(plan: Plan) -> dict:
    """The `svdrender plan --json` document."""
    defaults = plan.recipe.model_defaults
    return {
        "svdrender": __version__,
        "recipe": str(plan.recipe.path),
        "name": plan.recipe.name,
        "model": {**asdict(plan.recipe.model), "resolved_revision": plan.model_revision},
        "model_defaults": {
            "config": defaults.config, "family": defaults.family, "trained_frames": defaults.trained_frames,
            "values": dict(defaults.values), "sources": dict(defaults.sources), "fixed": dict(defaults.fixed),
        },
        "warnings": [str(w) for w in plan.recipe.warnings],
        "output_dir": str(plan.recipe.output_dir),
        "formats": list(plan.recipe.formats),
        "jobs": [
            {
                "id": j.id, "item": j.item, "preset": j.preset, "seed": j.seed, "image": str(j.image),
                "image_sha256": j.image_sha256, "settings": asdict(j.settings), "scheduler": j.scheduler.as_json(),
                "outputs": {k: str(v) for k, v in j.outputs.items()}, "sidecar": str(j.sidecar),
                "cache_key": j.cache_key, "skip": j.skip_reason, "render_reason": j.render_reason, "cost": j.cost,
                "setting_sources": dict(j.setting_sources),
            }
            for j in plan.jobs
        ],
    }
