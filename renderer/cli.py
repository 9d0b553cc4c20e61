"""The `svdrender` command: parse options, call one function, map errors to exit codes. Nothing else.

`validate`, `plan`, `schema`, `presets` and `--help` never import torch or diffusers; only rendering does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_OK, RecipeError, SvdrenderError, UsageError
from .speed.profiles import PROFILES

EXIT_CODES_HELP = """\b
Exit codes: 0 every job ok (or skipped), 1 some job failed, the model
could not load, or the output folder could not be written (disk full,
read-only, name too long), 2 invalid recipe or usage (or the output
folder is in use, or holds a manifest.json / index.html svdrender did
not write), 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP."""


class DefaultRenderGroup(click.Group):
    """`svdrender RECIPE…` means `svdrender render RECIPE…`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["render", *args]
        return super().parse_args(ctx, args)


def _count(n: int, noun: str) -> str:
    """`1 item`, `2 items`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _fail(exc: SvdrenderError, *, rendering: bool = True) -> None:
    """Print the error (every problem of a recipe, then their count) and exit with its code."""
    click.echo(str(exc) if isinstance(exc, RecipeError) else f"svdrender: {exc}", err=True)
    if isinstance(exc, RecipeError):
        click.echo(f"{_count(len(exc.problems), 'problem')} found{'; nothing was rendered' if rendering else ''}.",
                   err=True)
    sys.exit(exc.exit_code)


@click.group(cls=DefaultRenderGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="svdrender")
def main():
    """Render batches of Stable Video Diffusion clips from recipe files.

    \b
    svdrender RECIPE [RECIPE...]     render (same as `svdrender render`)
    svdrender validate RECIPE...     check recipes without loading a model
    svdrender plan RECIPE            list the jobs a render would run
    """


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (overrides output.dir).")
@click.option("--only", multiple=True, metavar="JOB_OR_ITEM",
              help="Render only this job id (item/preset/seed-N), item or item/preset; repeatable.")
@click.option("--picks", type=click.Path(path_type=Path), metavar="PICKS.json",
              help="Render exactly the jobs marked on the contact sheet and exported as picks.json.")
@click.option("--preset", "picks_preset", multiple=True, metavar="[FROM=]NAME",
              help="With --picks: render each picked item and seed with preset NAME instead (FROM=NAME: the picks "
                   "of preset FROM), as new jobs item/NAME/seed-N beside the picked ones; repeatable.")
@click.option("--model", "model", metavar="ID", help="Override the model, e.g. a local folder.")
@click.option("--smoke", is_flag=True, help="Smoke run: every job on builtin:tiny at 64x64, 4 frames, 2 steps, "
              "into OUTPUT_DIR-smoke (seconds on a CPU; real outputs are never touched).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; render nothing.")
@click.option("--force", is_flag=True, help="Render jobs even when their finished outputs are up to date.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed job.")
@click.option("--max-failures", type=click.IntRange(min=1), metavar="N", help="Stop after N failed jobs.")
@click.option("--shard", metavar="I/N", help="Render only shard I of N (numbered from 1), split by cost; for CI "
              "job matrices. Every machine computes the same split.")
@click.option("--profile", type=click.Choice(PROFILES),
              help="Performance profile (overrides performance.profile; see docs/performance.md).")
@click.option("--compile/--no-compile", "compile_unet", default=None,
              help="Force torch.compile of the UNet on or off (default: the profile's choice).")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the final summary line.")
def render(recipes, out, only, picks, picks_preset, model, smoke, device, dry_run, force, fail_fast, max_failures,
           shard, profile, compile_unet, quiet):
    """Render every job of RECIPE (item x preset x seed).

    Under `accelerate launch` or `torchrun`, each process renders its cost-balanced share on its own GPU.
    """
    from .batch import prefer_passive_openmp, run_plan, summarize
    from .distributed import ProcessGroup
    from .plan import plan_recipe
    from .shards import parse_shard, select

    prefer_passive_openmp()  # before anything imports torch (a multi-process launch does so right below)
    if out is not None and len(recipes) > 1:
        _fail(UsageError("--out takes one recipe at a time (each recipe needs its own output folder)"))
    if smoke and model:
        _fail(UsageError("--smoke renders on builtin:tiny; leave out --model"))
    if picks is not None and len(recipes) > 1:
        _fail(UsageError("--picks takes one recipe at a time (the one the jobs were picked from)"))
    try:
        part = parse_shard(shard) if shard else None
        plans = [plan_recipe(path, model=model, out=out, only=only, force=force, smoke=smoke, picks=picks,
                             preset=picks_preset) for path in recipes]
    except SvdrenderError as exc:
        _fail(exc)
    if part is not None:
        plans = [select(plan, part) for plan in plans]
    group = None if dry_run else ProcessGroup.from_launcher()
    if group is None or group.is_main:  # once, not once per GPU
        for plan in plans:
            _warn(plan.recipe)
    if dry_run:
        for plan in plans:
            click.echo(_plan_table(plan))
        sys.exit(EXIT_OK)
    exit_code = EXIT_OK
    for plan in plans:
        try:
            run = run_plan(plan, device=device, quiet=quiet, fail_fast=fail_fast, max_failures=max_failures,
                           group=group,
                           performance=plan.recipe.performance.with_choices(profile=profile, compile=compile_unet))
        except SvdrenderError as exc:
            _fail(exc)
        summary = summarize(run)
        if group is not None:
            summary = "\n".join(f"[process {group.rank}] {line}" for line in summary.splitlines())
        click.echo(summary.splitlines()[-1] if quiet else summary)
        exit_code = max(exit_code, run.exit_code)
        if run.exit_code >= 128:
            break
    sys.exit(exit_code)


def _plan_table(plan) -> str:
    from .report import summary_table

    rows = []
    for job in plan.jobs:
        s = job.settings
        paths = ", ".join(str(Path(p).relative_to(plan.recipe.output_dir)) + ("/" if fmt == "frames" else "")
                          for fmt, p in job.outputs.items())
        frames = (f"{s.num_frames}f" if s.segments == 1 else
                  f"{job.frame_count}f ({s.segments} segments of {s.num_frames})")
        m = s.motion
        if m.cache_inputs():  # looped or retimed: say what the files get
            how = [m.loop] * (m.loop != "none") + [m.interpolation] * m.interpolates
            frames += f" {'+'.join(how) or 'retimed'} {m.frame_count(job.frame_count)}f@{m.output_fps}fps"
        detail = f"{s.width}x{s.height} {frames} {s.num_inference_steps} steps {job.scheduler.describe()} -> {paths}"
        rows.append((job.id, "skip" if job.skip_reason else "render",
                     f"{detail} ({job.skip_reason or job.render_reason})"))
    todo = len(plan.to_render)
    return (f"{plan.recipe.name}: {_count(len(plan.jobs), 'job')} ({todo:,} to render), model {plan.recipe.model.id}, "
            f"output {plan.recipe.output_dir}\n{summary_table(rows)}{_model_settings(plan)}")


def _model_settings(plan) -> str:
    """The settings whose default the model decides, each value with where it came from and, when not every job
    shares it, how many jobs have it."""
    groups: dict[tuple, int] = {}
    for job in plan.jobs:
        for name, source in job.setting_sources:
            key = (name, getattr(job.settings, name), source)
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return ""
    order = [name for name, _ in plan.jobs[0].setting_sources]
    lines = [f"  {name} {value} ({source})" + ("" if n == len(plan.jobs) else f" for {_count(n, 'job')}")
             for (name, value, source), n in sorted(groups.items(), key=lambda g: order.index(g[0][0]))]
    return "\nsettings that depend on the model, and where each value came from:\n" + "\n".join(lines)


def _warn(recipe) -> None:
    """Print a recipe's warnings (values that render, but not as the model was trained) to stderr, once."""
    for warning in recipe.warnings:
        click.echo(str(warning), err=True)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print problems only.")
def validate(recipes, quiet):
    """Check recipes (schema, presets, input images) without loading a model."""
    from .recipe import load_recipe

    problems = []
    for path in recipes:
        try:
            recipe = load_recipe(path)
        except RecipeError as exc:
            problems.extend(exc.problems)
            continue
        _warn(recipe)
        if not quiet:
            jobs = sum(len(i.presets) * len(i.seeds) for i in recipe.items)
            warned = f", {_count(len(recipe.warnings), 'warning')}" if recipe.warnings else ""
            click.echo(f"{path}: ok ({_count(len(recipe.items), 'item')}, {_count(jobs, 'job')}{warned})")
    if problems:
        _fail(RecipeError(problems), rendering=False)
    sys.exit(EXIT_OK)


@main.command("plan", epilog=EXIT_CODES_HELP)
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print every job, its settings and output paths as JSON.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (overrides output.dir).")
@click.option("--only", multiple=True, metavar="JOB_OR_ITEM", help="Keep only matching jobs; repeatable.")
@click.option("--picks", type=click.Path(path_type=Path), metavar="PICKS.json",
              help="Plan only the jobs of a picks.json exported from the contact sheet.")
@click.option("--preset", "picks_preset", multiple=True, metavar="[FROM=]NAME",
              help="With --picks: plan each picked item and seed with preset NAME instead; repeatable.")
@click.option("--model", "model", metavar="ID", help="Override the model.")
@click.option("--force", is_flag=True, help="Plan as if nothing had been rendered yet.")
@click.option("--smoke", is_flag=True, help="Plan the smoke run (see `svdrender render --help`).")
def plan_command(recipe, as_json, out, only, picks, picks_preset, model, force, smoke):
    """List the jobs RECIPE would render, and which are already done."""
    from .plan import plan_json, plan_recipe

    if smoke and model:
        _fail(UsageError("--smoke renders on builtin:tiny; leave out --model"))
    try:
        plan = plan_recipe(recipe, model=model, out=out, only=only, force=force, smoke=smoke, picks=picks,
                           preset=picks_preset)
    except SvdrenderError as exc:
        _fail(exc, rendering=False)
    _warn(plan.recipe)
    if as_json:
        click.echo(json.dumps(plan_json(plan), indent=2))
    else:
        click.echo(_plan_table(plan))


@main.command()
@click.option("--manifest", is_flag=True, help="Print the manifest schema instead of the recipe schema.")
def schema(manifest):
    """Print the JSON Schema of recipes (or of manifests)."""
    name = "manifest.schema.json" if manifest else "recipe.schema.json"
    click.echo((Path(__file__).resolve().parent.parent / "schemas" / name).read_text(encoding="utf-8"), nl=False)


@main.command()
def presets():
    """List built-in scheduler presets, and the schedulers svdrender refuses for SVD."""
    from . import scheduler_presets

    click.echo(scheduler_presets.presets_table())


REPORT_EXIT_CODES_HELP = """\b
Exit codes: 0 the last run and every job ok, 1 the run failed or was
interrupted, or a job failed, was interrupted or never ran (0 with
--no-fail), 2 usage: no such folder, or a manifest.json / index.html
there that svdrender did not write."""


@main.command(epilog=REPORT_EXIT_CODES_HELP)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "json", "junit"]),
              help="Also print a report: markdown (CI job summary), json, or junit (each job a test case).")
@click.option("--no-fail", is_flag=True, help="Exit 0 whenever the report was made, even if the run failed.")
def report(out_dir, fmt, no_fail):
    """Rebuild OUT_DIR/manifest.json and the contact sheet OUT_DIR/index.html from the job sidecars.

    While a render holds OUT_DIR, the report is made from what is on disk now and nothing is rewritten.
    """
    from .errors import OutputError, OutputLockedError
    from .lock import output_lock
    from .report import check_own_files, format_report, read_report, rebuild, report_exit_code

    if not out_dir.is_dir():
        _fail(UsageError(f"{out_dir}: no such folder"))
    why_not_written = None
    try:
        check_own_files(out_dir)
        try:
            with output_lock(out_dir) as held:
                manifest = rebuild(out_dir)
                held.swept = not held.runs  # keep the ids of killed runs for the next render's sweep
        except OutputLockedError:
            why_not_written = "a render is writing here"
        except OutputError as exc:  # e.g. a downloaded CI artefact on a read-only disk: the report is still wanted
            why_not_written = str(exc)
        if why_not_written:
            manifest = read_report(out_dir)
    except SvdrenderError as exc:
        _fail(exc)
    if why_not_written and fmt:
        click.echo(f"svdrender: {why_not_written}: reporting from the sidecars, nothing rewritten", err=True)
    if fmt:
        click.echo(format_report(manifest, fmt), nl=False)
    elif why_not_written:
        click.echo(f"{out_dir}: {len(manifest.entries)} jobs ({why_not_written}: nothing rewritten)")
    else:
        click.echo(f"{out_dir / 'manifest.json'}: {len(manifest.entries)} jobs; "
                   f"contact sheet: {out_dir / 'index.html'}")
    sys.exit(EXIT_OK if no_fail else report_exit_code(manifest))


@main.command()
@click.argument("recipe", required=False, type=click.Path(path_type=Path))
def doctor(recipe):
    """Check this environment (versions, GPU, ffmpeg, hub cache) and RECIPE's model.

    \b
    One line per check: ok, warn, unknown (could not verify) or fail.
    Exit codes: 0 verified, rendering can work here; 1 a check failed, a
    render will fail; 2 RECIPE is invalid; 3 nothing failed but something
    could not be verified (offline, or the hub unreachable).
    """
    from .doctor import run_doctor

    sys.exit(run_doctor(recipe, echo=click.echo))


if __name__ == "__main__":  # pragma: no cover
    main()
