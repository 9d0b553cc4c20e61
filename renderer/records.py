"""Typed records of what a run did: job sidecars, the run record and the run manifest.

This module is the only code that knows their JSON keys. Reading validates against schemas/manifest.schema.json:
a sidecar is data someone (or some disk) may have changed, never trusted state, so anything that does not match the
schema is a `CorruptRecord` its caller turns into "corrupt → re-render" instead of a crash. Reads are bounded: only a
regular file (no FIFO, device or symlink) of at most `MAX_RECORD_BYTES` is read at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .paths import Unreadable, read_bounded
from .speed.profiles import PerformanceRecord
from .recipe import Settings
from .scheduler_presets import SchedulerChoice

SIDECAR_KIND = "svdrender.job"
RUN_KIND = "svdrender.run"
# A sidecar of a 1,000-sigma preset is ~60 KB; a manifest of 10,000 jobs ~40 MB.
MAX_RECORD_BYTES = 64 * 1024 * 1024

# Job statuses: the first three are what a sidecar can record; the run record adds "skipped" and "not run"; a
# report shows "corrupt" for a job the run finished whose sidecar is now missing or malformed.
OK, FAILED, INTERRUPTED, SKIPPED, NOT_RUN, CORRUPT = "ok", "failed", "interrupted", "skipped", "not run", "corrupt"
# A planned job that another process of the same render (accelerate, torchrun) was to render.
OTHER_PROCESS = "rendered by another process"
# Run outcomes.
RUN_OK, RUN_FAILED, RUN_INTERRUPTED = "ok", "failed", "interrupted"

_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"


class CorruptRecord(ValueError):
    """A sidecar or manifest that cannot be used: unreadable, not JSON, or not what the schema says."""


@lru_cache(maxsize=None)
def _validator(definition: str):
    import jsonschema

    schema = json.loads(_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})


def _check(data: Any, definition: str) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_validator(definition).iter_errors(data))
    if error is not None:
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise CorruptRecord(f"{where}: {error.message[:200]}")


def read_json_bounded(path: Path, limit: int = MAX_RECORD_BYTES) -> Any:
    """JSON from `path` if it is a regular file (not a symlink, FIFO or device) of at most `limit` bytes."""
    try:
        data = read_bounded(path, limit, follow_symlinks=False)
    except Unreadable as exc:
        raise CorruptRecord({"symlink": "a symlink, not a file", "folder": "not a regular file",
                             "special": "not a regular file", "too large": f"larger than {limit} bytes"
                             }.get(exc.kind, exc.detail)) from None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptRecord("not JSON") from None


@dataclass(frozen=True)
class OutputFile:
    """One file a job wrote, relative to its sidecar's folder."""

    format: str
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelRecord:
    """The model a job ran on (sidecar `model`); a job that failed before loading knows only what was asked for."""

    id: str
    requested_revision: str | None = None
    source: str | None = None  # builtin, local or hub
    resolved_revision: str | None = None
    variant: str | None = None
    dtype: str | None = None
    device: str | None = None
    load_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        # A job that failed before loading knows only what was asked for; a loaded model records its variant even
        # when there is none.
        return {k: v for k, v in asdict(self).items() if v is not None or k == "variant" and self.source is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelRecord":
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class SchedulerUsed:
    """The diffusers scheduler a job ran with (sidecar `scheduler`): its class and config as diffusers reports them,
    the σ values it followed and what the pipeline was called with."""

    class_name: str
    config: Mapping[str, Any]
    sigmas: tuple[float, ...]
    call_kwargs: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"class": self.class_name, "config": dict(self.config), "sigmas": list(self.sigmas),
                "call_kwargs": dict(self.call_kwargs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SchedulerUsed":
        return cls(data["class"], data["config"], tuple(data["sigmas"]), data["call_kwargs"])


def preset_spec_json(choice: SchedulerChoice, description: str) -> dict[str, Any]:
    """Sidecar `preset_spec`: the preset as the recipe resolved it, with its description."""
    return {"description": description, **choice.as_json()}


def _scheduler_choice(spec: Mapping[str, Any], steps: Any) -> SchedulerChoice:
    sigmas = spec.get("sigmas")
    return SchedulerChoice(
        preset=spec["scheduler"], num_inference_steps=spec.get("num_inference_steps", steps),
        sigmas=tuple(sigmas) if isinstance(sigmas, list) else sigmas,
        options=tuple((spec.get("scheduler_options") or {}).items()))


@dataclass(frozen=True)
class SegmentRecord:
    """How one segment of a job was made and where its frames are in the video (schema `$defs/segment`)."""

    index: int
    seed: int
    conditioning_frame: int | None  # the video's frame this segment was conditioned on; None: the input image
    conditioning_sha256: str  # of the input image file, or of that frame's uint8 [height, width, 3] array
    first_frame: int
    last_frame: int  # inclusive
    timings: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "seed": self.seed, "conditioning_frame": self.conditioning_frame,
                "conditioning_sha256": self.conditioning_sha256, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "timings": dict(self.timings)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SegmentRecord":
        """A segment of a sidecar that has been validated already."""
        return cls(index=data["index"], seed=data["seed"], conditioning_frame=data["conditioning_frame"],
                   conditioning_sha256=data["conditioning_sha256"], first_frame=data["first_frame"],
                   last_frame=data["last_frame"], timings=data["timings"])


@dataclass(frozen=True)
class Sidecar:
    """A job's record, written next to its outputs after them (schema `$defs/job`)."""

    job_id: str
    item: str
    preset: str
    seed: int
    status: str
    error: str | None
    input_path: str
    settings: Mapping[str, Any]  # as recorded, by the setting names of the recipe schema
    scheduler_choice: SchedulerChoice
    preset_description: str
    scheduler: SchedulerUsed | None
    model: ModelRecord
    cache_key: str
    cache_inputs: Mapping[str, Any] | None
    frame_count: int | None
    width: int
    height: int
    fps: int
    frames_sha256: str | None
    files: tuple[OutputFile, ...]
    timings: Mapping[str, float]
    finished: str
    segments: tuple[SegmentRecord, ...] | None  # None: not rendered, or recorded before segments were chained
    data: Mapping[str, Any] = field(repr=False, compare=False)  # the record as written, for the run manifest

    @property
    def folder(self) -> Path:
        """The job's folder relative to the output folder."""
        return Path(self.item) / self.preset

    @property
    def seconds(self) -> float:
        return float(self.timings.get("total", 0.0))

    @classmethod
    def from_json(cls, data: Any) -> "Sidecar":
        """A validated sidecar; CorruptRecord for anything the schema refuses."""
        _check(data, "job")
        return cls(
            job_id=data["job_id"], item=data["item"], preset=data["preset"], seed=data["seed"], status=data["status"],
            error=data["error"], input_path=data["input"]["path"], settings=data["settings"],
            scheduler_choice=_scheduler_choice(data["preset_spec"], data["settings"].get("num_inference_steps")),
            preset_description=data["preset_spec"].get("description", ""),
            scheduler=None if data["scheduler"] is None else SchedulerUsed.from_json(data["scheduler"]),
            model=ModelRecord.from_json(data["model"]),
            cache_key=data["cache_key"], cache_inputs=data.get("cache_inputs"), frame_count=data["frame_count"],
            width=data["width"], height=data["height"], fps=data["fps"], frames_sha256=data["frames_sha256"],
            files=tuple(OutputFile(f["format"], f["path"], f["sha256"], f["bytes"]) for f in data["files"]),
            timings=data["timings"], finished=data["finished"],
            segments=None if data.get("segments") is None else tuple(map(SegmentRecord.from_json, data["segments"])),
            data=data)

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


def sidecar_json(*, version: str, job_id: str, item: str, preset: str, seed: int, status: str, error: str | None,
                 input_path: str, input_sha256: str, settings: Settings, scheduler_choice: SchedulerChoice,
                 preset_description: str, scheduler: SchedulerUsed | None, model: ModelRecord,
                 performance: PerformanceRecord | None, versions: dict, recipe_path: str, recipe_sha256: str,
                 recipe_git: dict | None, smoke: bool, cache_key: str, cache_inputs: dict, fallback: list | None,
                 frame_count: int | None, width: int, height: int, fps: int, frames_sha256: str | None,
                 segments: list[SegmentRecord] | None, files: list[dict], timings: dict, started: str,
                 finished: str, model_frame_count: int | None = None, motion_filter: str | None = None
                 ) -> dict[str, Any]:
    """A job sidecar's JSON document (the schema's `$defs/job`), keys in the order a reader expects them.

    `frame_count`, `fps` and `frames_sha256` describe the frames the files hold, after loop and interpolation;
    `motion` says how many the model made (`model_frame_count`, None when it made none) and the ffmpeg filter that
    interpolated them."""
    return {
        "kind": SIDECAR_KIND, "svdrender_version": version, "job_id": job_id, "item": item, "preset": preset,
        "seed": seed, "status": status, "error": error, "input": {"path": input_path, "sha256": input_sha256},
        "settings": asdict(settings), "preset_spec": preset_spec_json(scheduler_choice, preset_description),
        "scheduler": None if scheduler is None else scheduler.to_json(), "model": model.to_json(),
        "performance": {} if performance is None else performance.to_json(), "versions": versions,
        "recipe": {"path": recipe_path, "sha256": recipe_sha256, "git": recipe_git}, "smoke": smoke,
        "cache_key": cache_key, "cache_inputs": cache_inputs, "fallback": fallback, "frame_count": frame_count,
        "width": width, "height": height, "fps": fps, "frames_sha256": frames_sha256,
        "segments": None if segments is None else [segment.to_json() for segment in segments],
        "motion": None if model_frame_count is None else {"model_frames": model_frame_count, "filter": motion_filter},
        "files": files,
        "timings": timings, "started": started, "finished": finished,
    }


def read_sidecar(path: Path) -> Sidecar:
    """The sidecar at `path` (FileNotFoundError if there is none; CorruptRecord if it cannot be used)."""
    return Sidecar.from_json(read_json_bounded(path))


@dataclass(frozen=True)
class PlannedJob:
    """One job the run planned, and what became of it in this run."""

    job_id: str
    item: str
    preset: str
    seed: int
    status: str  # ok | skipped | failed | interrupted | not run
    detail: str = ""


@dataclass(frozen=True)
class RunRecord:
    """What the last run into an output folder set out to do and how it ended (the manifest's `run`)."""

    recipe: str
    name: str
    outcome: str  # ok | failed | interrupted
    error: str | None
    exit_code: int
    run_id: str
    started: str
    finished: str
    model_loads: int
    processes: int
    jobs: tuple[PlannedJob, ...]
    smoke: bool = False  # a --smoke run (builtin:tiny, tiny size, OUTPUT_DIR-smoke)

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "name": self.name, "smoke": self.smoke, "outcome": self.outcome, "error": self.error,
                "exit_code": self.exit_code, "run_id": self.run_id, "started": self.started,
                "finished": self.finished, "model_loads": self.model_loads, "processes": self.processes,
                "jobs": [{"job_id": j.job_id, "item": j.item, "preset": j.preset, "seed": j.seed, "status": j.status,
                          "detail": j.detail} for j in self.jobs]}

    @classmethod
    def from_json(cls, data: Any) -> "RunRecord":
        _check(data, "run_record")
        return cls(recipe=data["recipe"], name=data["name"], outcome=data["outcome"], error=data["error"],
                   exit_code=data["exit_code"], run_id=data["run_id"], started=data["started"],
                   finished=data["finished"], model_loads=data["model_loads"], processes=data["processes"],
                   jobs=tuple(PlannedJob(j["job_id"], j["item"], j["preset"], j["seed"], j["status"], j["detail"])
                              for j in data["jobs"]), smoke=data.get("smoke", False))


@dataclass(frozen=True)
class Entry:
    """One job as a report shows it: its record in this run and its sidecar, if it has one."""

    job_id: str
    item: str
    preset: str
    seed: int
    status: str  # ok | failed | interrupted | not run | corrupt
    error: str | None
    sidecar: Sidecar | None

    @property
    def seconds(self) -> float:
        return self.sidecar.seconds if self.sidecar is not None and self.status != NOT_RUN else 0.0


@dataclass(frozen=True)
class Manifest:
    """The run manifest (`manifest.json`): the last run's record and every valid sidecar in the output folder."""

    version: str
    output_dir: str
    updated: str
    run: RunRecord | None
    jobs: tuple[Sidecar, ...]
    corrupt: tuple[str, ...] = ()  # sidecars (relative paths) that could not be used, with the reason

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every job: those the run planned in plan order (with "not run" for those that never started), then any
        other sidecar of the folder (earlier runs, merged shards) by job id."""
        by_id = {s.job_id: s for s in self.jobs}
        entries = []
        planned = self.run.jobs if self.run is not None else ()
        for job in planned:
            sidecar = by_id.pop(job.job_id, None)
            if job.status in (NOT_RUN, FAILED, INTERRUPTED):
                # This run's word wins: a sidecar an earlier run left does not make a job that never ran look done.
                status, error = job.status, job.detail or (sidecar.error if sidecar is not None else None)
            elif sidecar is None and job.detail == OTHER_PROCESS:
                # Its process stopped before rendering it (a machine died): nothing of it exists yet.
                status, error = NOT_RUN, "not run: the process that was to render it stopped before the end"
            elif sidecar is None:
                status, error = CORRUPT, "its sidecar is missing or corrupt: the next run renders it again"
            else:
                status, error = sidecar.status, sidecar.error
            entries.append(Entry(job.job_id, job.item, job.preset, job.seed, status, error, sidecar))
        for sidecar in sorted(by_id.values(), key=lambda s: s.job_id):
            entries.append(Entry(sidecar.job_id, sidecar.item, sidecar.preset, sidecar.seed, sidecar.status,
                                 sidecar.error, sidecar))
        return tuple(entries)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def ok(self) -> bool:
        """Whether a CI reader should see this folder as green: the run (if recorded) and every job ok."""
        if self.run is not None and self.run.outcome != RUN_OK:
            return False
        return all(e.status == OK for e in self.entries)

    @property
    def name(self) -> str:
        return (self.run.name if self.run is not None and self.run.name else None) or Path(self.output_dir).name

    def to_json(self) -> dict[str, Any]:
        return {"kind": RUN_KIND, "svdrender_version": self.version, "output_dir": self.output_dir,
                "updated": self.updated, "run": self.run.to_json() if self.run is not None else {},
                "counts": self.counts, "corrupt": list(self.corrupt),
                "jobs": [s.to_json() for s in self.jobs]}


def read_run_record(manifest_path: Path) -> RunRecord | None:
    """The run record of an existing manifest.json, or None (absent, or written by an older svdrender)."""
    try:
        data = read_json_bounded(manifest_path)
    except (FileNotFoundError, CorruptRecord):
        return None
    run = data.get("run") if isinstance(data, dict) else None
    try:
        return RunRecord.from_json(run)
    except CorruptRecord:
        return None


def is_own_manifest(path: Path) -> bool:
    """Whether `path` is absent or a manifest svdrender wrote (so rewriting it loses nothing of anyone else's)."""
    if not os.path.lexists(path):
        return True  # or cannot be looked up at all (a name too long): taking the lock reports that
    try:
        data = read_json_bounded(path)
    except FileNotFoundError:
        return True
    except CorruptRecord:
        return False
    return isinstance(data, dict) and data.get("kind") == RUN_KIND
