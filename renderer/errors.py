"""The one error hierarchy of svdrender; each error knows the exit code the CLI maps it to."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class SvdrenderError(Exception):
    """Base of every error svdrender reports to a user without a traceback."""

    exit_code = EXIT_JOB_FAILED


@dataclass(frozen=True)
class Problem:
    """One mistake in a recipe, located at file:line:col and a JSON path such as `$.presets.fast.sigmas[2]`; a
    warning is a value that renders, but not as the model was trained (the recipe stays valid)."""

    file: str
    line: int | None
    col: int | None
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"


class RecipeError(SvdrenderError):
    """A recipe that cannot be rendered; carries every problem found, not just the first."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.col or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class PicksError(RecipeError):
    """A picks file (`--picks`) that cannot be used; carries every problem, each located in that file."""


class UsageError(SvdrenderError):
    """A command-line mistake (bad option value, unknown --only target, ...)."""

    exit_code = EXIT_USAGE


class ImageError(SvdrenderError):
    """An input image that cannot be used (missing, not an allowed format, truncated, too large)."""


class ModelUnavailableError(SvdrenderError):
    """The model cannot be loaded here (not cached while offline, missing folder, bad revision)."""


class JobError(SvdrenderError):
    """One job failed; the batch goes on and the job is recorded as failed."""


class OutputError(SvdrenderError):
    """The output folder cannot be written outside any one job (lock, manifest, contact sheet): read-only, full,
    a name too long, or files there that are not svdrender's."""


class OutputLockedError(SvdrenderError):
    """Another svdrender run is writing into the same output folder."""

    exit_code = EXIT_USAGE


class PeerLostError(SvdrenderError):
    """Another process of a multi-process render (accelerate/torchrun) stopped before a step all processes share."""

    def __init__(self, rank: int, world_size: int):
        self.rank = rank
        self.world_size = world_size
        super().__init__(f"process {rank}: another process of this {world_size}-process render stopped before the "
                         "end (its machine or process died); this process's finished jobs are kept. Run the same "
                         "command again on every machine to render the rest")
