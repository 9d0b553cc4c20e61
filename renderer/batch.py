"""The run loop: a Plan rendered on one engine, every job in order, outputs and sidecars written atomically (on a
writer thread that overlaps the next job), a run record and manifest at the end. The output lock is in `lock`,
signal handling in `signals`, progress display in `progress`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from . import __version__
from .errors import EXIT_JOB_FAILED, EXIT_OK, EXIT_SIGINT, JobError, PeerLostError, SvdrenderError
from .images import image_sha256
from .layout import INPUT_THUMBNAIL_NAME
from .lock import HeldLock, output_lock
from .outputs import (frames_sha256, retract_sidecar, run_id, sweep_temporaries, write_input_thumbnail,
                      write_outputs, write_sidecar)
from .plan import Job, Plan, decide, recheck, with_cache_key
from .speed.profiles import PerformanceRecord, PerformanceRequest
from .records import (NOT_RUN, OK, OTHER_PROCESS, RUN_FAILED, RUN_INTERRUPTED, RUN_OK, SKIPPED, ModelRecord,
                      PlannedJob, RunRecord, sidecar_json)
from .progress import Progress
from .provenance import git_commit, versions
from .report import check_own_files, summary_table, write_manifest
from .shards import select
from .signals import Interrupted, SignalGuard, stop_on_signals


@dataclass
class JobResult:
    """What happened to one job."""

    job: Job
    status: str  # ok | skipped | failed | interrupted
    detail: str = ""
    sidecar: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What happened to a whole run."""

    results: list[JobResult]
    exit_code: int
    manifest: Path | None = None
    model_loads: int = 0


def _lock_for_group(stack: ExitStack, out_dir: Path, group) -> HeldLock | None:
    """Take the output lock (main process only, in a group), recording every process's run id; make every process
    fail alike if it is held. Returns the held lock in the process that holds it."""
    refusal = None
    held = None
    ids = tuple(group.all_gather(run_id())) if group is not None else (run_id(),)
    if group is None or group.is_main:
        try:
            check_own_files(out_dir)
            held = stack.enter_context(output_lock(out_dir, ids))
        except SvdrenderError as exc:
            refusal = exc
    if group is not None:
        refusal = group.broadcast(refusal)
    if refusal:
        raise refusal
    return held


class RenderEngine(Protocol):
    """What run_plan asks of an engine: renderer.engine.Engine, or a stand-in in tests about what happens around
    rendering. `pipe` is None until `load`; `render` returns the frames with the scheduler used and timings."""

    pipe: Any
    info: ModelRecord | None
    performance: PerformanceRecord | None
    loads: int

    def load(self) -> ModelRecord: ...

    def prefetch(self, job: Job) -> None: ...

    def render(self, job: Job, on_step: Callable[[int, int], None] | None = None) -> Any: ...


def _sidecar(job: Job, plan: Plan, status: str, *, engine: RenderEngine | None = None, rendered=None, files=(),
             timings=None, error: str | None = None, started: float = 0.0, frames=None, frames_hash: str | None = None
             ) -> dict[str, Any]:
    """A job's sidecar; `frames` are the frames its files hold (the rendered ones after loop and interpolation)."""
    s = job.settings
    if rendered is not None and frames is None:
        frames = rendered.frames
    recipe = plan.recipe
    return sidecar_json(
        version=__version__, job_id=job.id, item=job.item, preset=job.preset, seed=job.seed, status=status,
        error=error, input_path=job.image_display, input_sha256=job.image_sha256, settings=s,
        scheduler_choice=job.scheduler, preset_description=job.preset_description,
        scheduler=None if rendered is None else rendered.scheduler,
        model=engine.info if engine is not None and engine.info is not None else
        ModelRecord(recipe.model.id, recipe.model.revision),
        performance=engine.performance if engine is not None else None, versions=versions(),
        recipe_path=str(recipe.path), recipe_sha256=recipe.sha256, recipe_git=git_commit(recipe.path),
        smoke=recipe.smoke,
        cache_key=job.cache_key, cache_inputs=job.cache_inputs,
        fallback=(rendered.fallback or None) if rendered is not None else None,
        frame_count=int(frames.shape[0]) if frames is not None else None, width=s.width,
        height=s.height, fps=s.output_fps,
        frames_sha256=(frames_hash or frames_sha256(frames)) if frames is not None else None,
        segments=(list(rendered.segments) or None) if rendered is not None else None,
        files=list(files), timings=timings or {}, started=_utc(started or time.time()), finished=_utc(time.time()),
        model_frame_count=int(rendered.frames.shape[0]) if rendered is not None else None,
        motion_filter=s.motion.filter)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def prefer_passive_openmp() -> None:
    """Let OpenMP worker threads sleep instead of spinning while they wait, unless the user set OMP_WAIT_POLICY.

    Must run before torch is imported (OpenMP reads it once). With spinning (libgomp's default) the first job on a
    busy 2-core machine denoised in 18-36 s against 2-4 s for the next ones; with PASSIVE in ~4.5 s
    (benchmarks/cpu_first_job.py). On a GPU the CPU threads mostly wait, so sleeping costs nothing there.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_plan(plan: Plan, *, device: str | None = None, quiet: bool = False, fail_fast: bool = False,
             max_failures: int | None = None, engine: RenderEngine | None = None, group=None,
             performance: PerformanceRequest | None = None) -> RunResult:
    """Render every job of a plan that is not skipped; return results and the exit code.

    With a process group (accelerate/torchrun), this process renders only its cost-balanced share; the main process
    holds the output lock, sweeps temporaries before anyone writes, and rebuilds the manifest after everyone is done.
    """
    out_dir = plan.recipe.output_dir
    results: list[JobResult] = []
    exit_code = EXIT_OK
    run_error: SvdrenderError | None = None  # why the run as a whole could not go on (the model cannot load)
    stopped = ""  # why jobs were left unstarted after --fail-fast / --max-failures
    started = time.time()
    planned = plan
    if group is not None:
        plan = select(plan, group.shard)
        device = group.device if device in (None, "auto") else device
    with ExitStack() as stack:
        guard = stack.enter_context(stop_on_signals())  # disarmed until the jobs start: setup is never cut short
        held = _lock_for_group(stack, out_dir, group)
        if held is not None:
            sweep_temporaries(out_dir, held.runs)
        if group is not None:
            group.barrier()
        plan = recheck(plan)  # a run that held the lock before us may have finished some jobs since we planned
        todo = [j for j in plan.jobs if j.skip_reason is None]
        progress = Progress(len(plan.jobs), quiet)

        def show(result: JobResult) -> None:
            progress.finish(result.job.id, result.status, result.detail)

        # Encoding and writing a job's files overlaps the next job's rendering; see _run_job.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svdrender-writer")
        pending: list[JobResult | Future] = []
        handled = False  # whether the block below ended in a way it foresaw
        try:
            guard.arm()
            _write_thumbnails(plan, todo)
            for job in plan.jobs:
                if job.skip_reason is not None:
                    result = JobResult(job, "skipped", job.skip_reason)
                    results.append(result)
                    show(result)
            if todo and engine is None:
                prefer_passive_openmp()
                from .engine import Engine

                engine = Engine(plan.recipe.model, device=device, base_dir=plan.recipe.path.parent,
                                performance=performance or plan.recipe.performance,
                                jobs=todo)
            for i, job in enumerate(todo):
                progress.start(job)
                if i + 1 < len(todo):
                    engine.prefetch(todo[i + 1])  # the next input image loads while this job renders
                outcome = _run_job(job, plan, engine, progress, guard, writer)
                pending.append(outcome)
                if isinstance(outcome, Future):
                    outcome.add_done_callback(lambda done: show(done.result()))
                    _limit_unwritten(pending)
                else:
                    show(outcome)
                if _status(outcome) == "interrupted" or guard.received is not None:
                    exit_code = EXIT_SIGINT  # a plain KeyboardInterrupt; the guard's own signal overrides it below
                    break
                failures = sum(_status(o) == "failed" for o in pending)
                if failures and (fail_fast or (max_failures is not None and failures >= max_failures)):
                    stopped = (f"not run: the batch stopped after {failures} failed job{'s' if failures > 1 else ''} "
                               f"({'--fail-fast' if fail_fast else '--max-failures'})")
                    break
            handled = True
        except KeyboardInterrupt:
            exit_code, handled = EXIT_SIGINT, True
        except Interrupted:
            handled = True  # the guard knows which signal; cleanup below must not be cut by another one
        except SvdrenderError as exc:  # the model cannot load: recorded in the manifest, then raised to the caller
            run_error, exit_code, handled = exc, exc.exit_code, True
        finally:
            # An error svdrender did not foresee propagates; the manifest must still not say "ok".
            crash = None if handled else sys.exc_info()[1]
            guard.armed = False
            # Every rendered job's files and sidecar are written before the sweep and the manifest.
            writer.shutdown(wait=True)
            results.extend(o.result() if isinstance(o, Future) else o for o in pending)
            exit_code = guard.exit_code or exit_code
            progress.close()
            manifest = lost = None
            if group is None:
                sweep_temporaries(out_dir, held.runs)
                held.swept = True
            elif exit_code == EXIT_OK:
                try:
                    group.barrier()  # the manifest must include every process's sidecars
                except PeerLostError as exc:
                    lost = exc  # the sidecars on disk still make a true manifest; report after writing it
                else:
                    if held is not None:
                        sweep_temporaries(out_dir, held.runs)
                        held.swept = True
            if exit_code == EXIT_OK and any(r.status == "failed" for r in results):
                exit_code = EXIT_JOB_FAILED
            if group is None or group.is_main:
                failed_run = crash is not None or lost is not None
                record = _run_record(planned, results, EXIT_JOB_FAILED if failed_run else exit_code,
                                     run_error or crash or lost, guard, stopped, started,
                                     engine.loads if engine is not None else 0,
                                     group.world_size if group is not None else 1)
                manifest = write_manifest(out_dir, record)[0]
    if lost is not None:
        raise lost
    if run_error is not None:
        raise run_error
    return RunResult(results, exit_code, manifest, engine.loads if engine is not None else 0)


def _run_record(plan: Plan, results: list[JobResult], exit_code: int, run_error: BaseException | None,
                guard: SignalGuard, stopped: str, started: float, model_loads: int, processes: int) -> RunRecord:
    """How the run ended, with every planned job: its status here, or "not run" and why."""
    by_id = {r.job.id: r for r in results}
    if guard.received is not None:
        signal_error = f"interrupted by {signal.Signals(guard.received).name}"
    else:
        signal_error = "interrupted by SIGINT" if exit_code == EXIT_SIGINT else None
    if run_error is not None and not isinstance(run_error, SvdrenderError):
        run_error = f"{type(run_error).__name__}: {run_error}"
    why_not_run = (f"not run: {run_error}" if run_error is not None else
                   f"not run: {signal_error}" if signal_error else stopped or "not run")
    jobs = []
    for job in plan.jobs:
        result = by_id.get(job.id)
        if result is not None:
            jobs.append(PlannedJob(job.id, job.item, job.preset, job.seed, result.status, result.detail))
        elif processes > 1:
            jobs.append(PlannedJob(job.id, job.item, job.preset, job.seed, SKIPPED, OTHER_PROCESS))
        else:
            jobs.append(PlannedJob(job.id, job.item, job.preset, job.seed, NOT_RUN, why_not_run))
    if exit_code >= 128:
        outcome, error = RUN_INTERRUPTED, signal_error
    elif run_error is not None or exit_code != EXIT_OK or any(j.status != OK and j.status != SKIPPED for j in jobs):
        outcome, error = RUN_FAILED, str(run_error) if run_error is not None else (stopped or None)
    else:
        outcome, error = RUN_OK, None
    return RunRecord(recipe=str(plan.recipe.path), name=plan.recipe.name, outcome=outcome, error=error,
                     exit_code=exit_code, run_id=run_id(), started=_utc(started), finished=_utc(time.time()),
                     model_loads=model_loads, processes=processes, jobs=tuple(jobs), smoke=plan.recipe.smoke)


def _write_thumbnails(plan: Plan, todo: list[Job]) -> None:
    """Each item's input image as a small JPEG in its folder, for the contact sheet (rewritten when it renders)."""
    rendering = {j.item for j in todo}
    for job in {j.item: j for j in plan.jobs}.values():
        target = plan.recipe.output_dir / job.item / INPUT_THUMBNAIL_NAME
        if job.item in rendering or not target.is_file():
            try:
                write_input_thumbnail(job.image, target, root=plan.recipe.output_dir)
            except (OSError, SvdrenderError):
                pass  # the contact sheet shows the item without it; its jobs report their own image problems


def _run_job(job: Job, plan: Plan, engine: RenderEngine, progress: Progress, guard: SignalGuard,
             writer: ThreadPoolExecutor) -> JobResult | Future:
    """Render one job here; hand its frames to `writer`, whose Future gives the JobResult once files and sidecar are
    written. A failure or interruption while rendering is recorded in the job's sidecar and returned, never raised.

    Writing runs on the writer thread so that the mp4 encode overlaps the next job's rendering. Signals only ever
    interrupt the main thread, so a write that has started always finishes (sidecar last), and run_plan waits for it.
    """
    started = time.time()
    t0 = time.perf_counter()
    load_seconds = 0.0
    root = plan.recipe.output_dir
    try:
        if engine.pipe is None:
            engine.load()
            load_seconds = engine.info.load_seconds
        if plan.model_revision is None and engine.info is not None:
            # The hub revision resolved only now (downloaded by this load): key the job by the commit, as later
            # runs will, and skip it if a run before the cache was emptied finished it.
            job = decide(with_cache_key(job, plan.recipe, engine.info.resolved_revision))
            if job.skip_reason:
                return JobResult(job, "skipped", job.skip_reason)
        retract_sidecar(job.sidecar, root=root)
        rendered = engine.render(job, on_step=progress.step)
        _check_frames(rendered.frames)
        if image_sha256(job.image) != job.image_sha256:
            raise JobError(f"{job.image_display}: the input image changed while the batch ran; rerun to render it")
        return writer.submit(_write_job, job, plan, engine, rendered, started, t0, load_seconds)
    except (KeyboardInterrupt, Interrupted) as exc:
        status_error = "interrupted by " + (exc.args[0] if isinstance(exc, Interrupted) else "SIGINT")
        record = _sidecar(job, plan, "interrupted", engine=engine, error=status_error, started=started)
        _record_unfinished(job, record, root, guard)
        return JobResult(job, "interrupted", status_error, record)
    except SvdrenderError as exc:
        if engine.pipe is None:
            raise  # the model itself cannot load: every job would fail the same way
        error = str(exc)
    except Exception as exc:  # one broken job must not end a nightly batch; its traceback goes to the sidecar
        error = _describe(exc)
    return _failed(job, plan, engine, error, started, t0, guard)


def _write_job(job: Job, plan: Plan, engine, rendered, started: float, t0: float, load_seconds: float) -> JobResult:
    """Encode and write a rendered job's files, then its sidecar (on the writer thread)."""
    root = plan.recipe.output_dir
    try:
        t1 = time.perf_counter()
        frames = job.settings.motion.apply(rendered.frames)  # loop, then interpolation: what every format writes
        postprocess = {"postprocess": round(time.perf_counter() - t1, 3)} if frames is not rendered.frames else {}
        t1 = time.perf_counter()
        # The frames' sha256 (~0.05 s for 25 frames at 1024x576; hashlib releases the GIL) is computed while ffmpeg
        # encodes, instead of after it: for the batch's last video nothing else hides it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svdrender-hash") as hasher:
            frames_hash = hasher.submit(frames_sha256, frames)
            files = write_outputs(frames, job.outputs, job.settings.output_fps, root=root)
            timings = {"load": load_seconds, **rendered.timings, **postprocess,
                       "encode": round(time.perf_counter() - t1, 3), "total": round(time.perf_counter() - t0, 3)}
            record = _sidecar(job, plan, "ok", engine=engine, rendered=rendered, files=files, timings=timings,
                              started=started, frames=frames, frames_hash=frames_hash.result())
        write_sidecar(job.sidecar, record, root=root)
        return JobResult(job, "ok", f"{timings['total']:.1f}s", record)
    except Exception as exc:  # an encoder error or a full disk fails this job only
        return _failed(job, plan, engine, _describe(exc), started, t0)


def _describe(exc: Exception) -> str:
    if isinstance(exc, SvdrenderError):
        return str(exc)
    if os.environ.get("SVDRENDER_DEBUG"):
        traceback.print_exc()
    return f"{type(exc).__name__}: {exc}"


def _failed(job: Job, plan: Plan, engine, error: str, started: float, t0: float,
            guard: SignalGuard | None = None) -> JobResult:
    record = _sidecar(job, plan, "failed", engine=engine, error=error, started=started,
                      timings={"total": round(time.perf_counter() - t0, 3)})
    _record_unfinished(job, record, plan.recipe.output_dir, guard)
    return JobResult(job, "failed", error, record)


def _status(outcome: JobResult | Future) -> str | None:
    """A job's status, or None while its files are still being written."""
    if isinstance(outcome, JobResult):
        return outcome.status
    return outcome.result().status if outcome.done() else None


def _limit_unwritten(pending: list) -> None:
    """Wait while more than one rendered job waits for the writer: each holds its frames in memory."""
    unwritten = [o for o in pending if isinstance(o, Future) and not o.done()]
    if len(unwritten) > 1:
        unwritten[0].result()


def _record_unfinished(job: Job, record: dict[str, Any], root: Path, guard: SignalGuard | None) -> None:
    """Write a failed or interrupted job's sidecar if at all possible; without it the job simply renders again.

    On the main thread (`guard` given) a signal waits until the sidecar is written; the writer thread has none.
    """
    try:
        with guard.held() if guard is not None else contextlib.nullcontext():
            write_sidecar(job.sidecar, record, root=root)
    except (OSError, SvdrenderError):
        pass  # a full disk, or the path that made the job fail; the run's summary still reports the job


def _check_frames(frames) -> None:
    """Refuse frames that are all black: NaN or overflow in the VAE decode becomes 0 in uint8."""
    if not frames.any():
        raise JobError("every frame is black (NaN or overflow while decoding? try dtype float32 or bfloat16)")


def summarize(run: RunResult) -> str:
    """The end-of-run table and counts."""
    rows = [(r.job.id, r.status, r.detail) for r in run.results]
    counts: dict[str, int] = {}
    for r in run.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    where = f"; manifest: {run.manifest}" if run.manifest else ""
    return f"{summary_table(rows)}\n{tally or 'no jobs'}{where}"
