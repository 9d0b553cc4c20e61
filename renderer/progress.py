"""Progress of a run: tqdm bars on a terminal or in a notebook, one plain line per job otherwise (CI logs)."""

from __future__ import annotations

import sys
import threading

from .plan import Job


def in_notebook() -> bool:
    """Running in a Jupyter kernel (Colab included), where tqdm.auto draws widget progress bars."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Progress:
    """tqdm bars on a terminal or in a notebook; one plain line per job otherwise (CI logs)."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.tty = (sys.stderr.isatty() or in_notebook()) and not quiet
        self.total = total
        self.done = 0
        self.lock = threading.Lock()  # finish() is also called from the writer thread
        self.jobs_bar = self.steps_bar = None
        self.job: Job | None = None  # the job rendering now, and the segment of it last shown
        self.segment = 0
        if self.tty:
            from tqdm.auto import tqdm

            self.jobs_bar = tqdm(total=total, desc="jobs", unit="job", position=0, file=sys.stderr)
            self.steps_bar = tqdm(total=0, desc="steps", unit="step", position=1, leave=False, file=sys.stderr)

    def start(self, job: Job) -> None:
        self.job, self.segment = job, 0
        if self.steps_bar is not None:
            self.steps_bar.reset(total=job.settings.num_inference_steps * job.settings.segments)
            self.steps_bar.set_description(job.id)

    def step(self, done: int, total: int) -> None:
        """`done` of `total` steps of the current job, its segments' steps one after the other."""
        segments = self.job.settings.segments
        segment = (done - 1) * segments // total + 1
        if segments > 1 and segment != self.segment:
            self.segment = segment
            where = f"{self.job.id} segment {segment}/{segments}"
            if self.steps_bar is not None:
                self.steps_bar.set_description(where)
            elif not self.quiet:
                with self.lock:
                    print(where, file=sys.stderr, flush=True)
        if self.steps_bar is not None:
            self.steps_bar.total = total
            self.steps_bar.n = done
            self.steps_bar.refresh()

    def finish(self, job_id: str, status: str, detail: str = "") -> None:
        with self.lock:
            self.done += 1
            line = f"[{self.done}/{self.total}] {job_id} {status}"
            if detail:
                line += f" ({detail})"
            if self.jobs_bar is not None:
                self.jobs_bar.update(1)
                if status not in ("ok", "skipped"):
                    self.jobs_bar.write(line, file=sys.stderr)
            elif not self.quiet or status in ("failed", "interrupted"):
                print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self.steps_bar, self.jobs_bar):
            if bar is not None:
                bar.close()
