"""Render from Python (notebooks, scripts): `renderer.render(recipe, **overrides)` returns one result per job.

It runs exactly what `svdrender RECIPE` runs: the same validation, plan, engine, outputs, sidecars, manifest and
contact sheet. Progress shows as tqdm bars (widgets in Jupyter and Colab), or one line per job in a log.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .errors import EXIT_SIGINT, Problem, RecipeError, UsageError
from .formats import FILE_FORMATS

DICT_RECIPE = "<recipe dict>"


@dataclass(frozen=True)
class JobOutput:
    """What one job left on disk: its status, its files and its sidecar manifest."""

    id: str
    item: str
    preset: str
    seed: int
    status: str  # ok | skipped (already done) | failed
    error: str | None
    paths: dict[str, Path]  # format → file (frames: a folder); empty unless the job's outputs exist
    sidecar_path: Path
    sidecar: dict[str, Any] = field(repr=False)

    @property
    def video(self) -> Path | None:
        """The job's first video file (mp4, webm, webp or gif), e.g. for IPython.display.Video."""
        return next((self.paths[f] for f in FILE_FORMATS if f in self.paths), None)


def render(recipe: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None,
           out: str | os.PathLike | None = None, only: str | list[str] | tuple[str, ...] = (),
           model: str | None = None, device: str = "auto", force: bool = False, fail_fast: bool = False,
           max_failures: int | None = None, quiet: bool = False, smoke: bool = False,
           picks: str | os.PathLike | None = None, preset: str | list[str] | tuple[str, ...] = ()) -> list[JobOutput]:
    """Render every job of a recipe file, or of a dict holding what such a file would; return one result per job.

    `out`, `only`, `picks`, `preset`, `model`, `device`, `force`, `fail_fast`, `max_failures`, `quiet` and `smoke`
    are the command line's options. Relative paths in a dict recipe resolve against `base_dir` (default: the current
    folder); a recipe file's resolve against its own folder. An invalid recipe raises RecipeError listing every
    problem, a model that cannot load raises ModelUnavailableError, and a failed job does not raise: its result has
    status "failed" and the error. Interrupting the kernel (SIGINT) stops after recording the current job and raises
    KeyboardInterrupt.
    """
    from .batch import run_plan
    from .plan import plan_recipe

    only = (only,) if isinstance(only, str) else tuple(only)
    out_path = Path(out).expanduser().resolve() if out is not None else None
    chosen = {"picks": Path(picks) if picks is not None else None,
              "preset": (preset,) if isinstance(preset, str) else tuple(preset)}
    if isinstance(recipe, Mapping):
        with _recipe_file(recipe, Path(base_dir if base_dir is not None else Path.cwd())) as path:
            with _located_in_dict(path):
                plan = plan_recipe(path, model=model, out=out_path, only=only, force=force, smoke=smoke, **chosen)
            _warn(plan.recipe.warnings, path)
            run = run_plan(plan, device=device, quiet=quiet, fail_fast=fail_fast, max_failures=max_failures)
    else:
        if base_dir is not None:
            raise UsageError("base_dir is for dict recipes; a recipe file's paths resolve against its own folder")
        plan = plan_recipe(Path(recipe), model=model, out=out_path, only=only, force=force, smoke=smoke, **chosen)
        _warn(plan.recipe.warnings)
        run = run_plan(plan, device=device, quiet=quiet, fail_fast=fail_fast, max_failures=max_failures)
    if run.exit_code == EXIT_SIGINT:
        raise KeyboardInterrupt
    if run.exit_code > 128:
        raise SystemExit(run.exit_code)
    return [_job_output(r) for r in run.results]


def _warn(warnings: tuple[Problem, ...], dict_file: Path | None = None) -> None:
    """Print a recipe's warnings to stderr once, as the CLI does (a dict's are named as the dict, not its file)."""
    for w in warnings:
        if dict_file is not None and Path(w.file).resolve() == dict_file.resolve():
            w = Problem(DICT_RECIPE, None, None, w.path, w.message, warning=True)
        print(w, file=sys.stderr, flush=True)


def _job_output(result) -> JobOutput:
    job = result.job
    sidecar = result.sidecar
    if not sidecar and result.status == "skipped":
        sidecar = json.loads(job.sidecar.read_text(encoding="utf-8"))
    done = result.status in ("ok", "skipped")
    return JobOutput(id=job.id, item=job.item, preset=job.preset, seed=job.seed, status=result.status,
                     error=None if done else (result.detail or None),  # a failed job's detail is its sidecar's error
                     paths=dict(job.outputs) if done else {}, sidecar_path=job.sidecar, sidecar=sidecar)


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"a recipe dict holds YAML data (mappings, lists, text, numbers, booleans, null) and paths, "
                    f"not {type(value).__name__}")


@contextmanager
def _recipe_file(recipe: Mapping[str, Any], base_dir: Path) -> Iterator[Path]:
    """The dict as a temporary recipe file in `base_dir`, so that it is validated and resolved like any recipe.

    Sidecars record its path and the sha256 of this YAML; the file is removed after the run.
    """
    data = json.loads(json.dumps(recipe, default=_plain))
    text = "# written by renderer.render() from a dict; removed after the run\n" + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True)
    base_dir = base_dir.expanduser().resolve()
    try:
        fd, name = tempfile.mkstemp(prefix=".svdrender-", suffix=".yaml", dir=base_dir)
    except OSError as exc:
        raise UsageError(f"cannot write the recipe into {base_dir} ({exc.strerror}); pass base_dir= a writable "
                         "folder that its relative paths start from") from None
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _located_in_dict(path: Path) -> Iterator[None]:
    """Name the dict, not the temporary file, in errors (its line numbers would point into generated YAML)."""
    try:
        yield
    except RecipeError as exc:
        problems = [Problem(DICT_RECIPE, None, None, p.path, p.message) if Path(p.file).resolve() == path.resolve()
                    else p for p in exc.problems]
        raise RecipeError(problems) from None
    except UsageError as exc:
        raise UsageError(str(exc).replace(str(path), DICT_RECIPE)) from None
