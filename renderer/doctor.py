"""`svdrender doctor`: can this environment render, and this recipe's model load, before any GPU time is spent?

One line per check: `ok` (verified), `warn` (works, with a caveat), `unknown` (could not be verified: offline or
the hub unreachable) or `fail` (a render will fail). Every import of torch, diffusers and transformers happens
inside a check, so a broken install is reported as a failed check instead of a traceback.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .errors import EXIT_USAGE, RecipeError
from .formats import FORMATS
from .paths import local_model_path

PACKAGES = ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "imageio-ffmpeg")
# Packages whose declared requirements on each other are checked (what `pip check` would say about them).
REQUIRING = ("svdrender", "diffusers", "transformers", "accelerate", "huggingface_hub")
# Exit codes a CI step can branch on (EXIT_USAGE, 2: the recipe or the command line is invalid).
EXIT_VERIFIED = 0  # every check passed or only warned: rendering can work here
EXIT_WILL_FAIL = 1  # a check failed: a render would fail here
EXIT_UNVERIFIED = 3  # nothing failed, but a check could not be verified (offline, or the hub unreachable)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    status: str  # ok | warn | unknown | fail
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<7}  {self.name:<16} {self.detail}"


@dataclass(frozen=True)
class KnownConflict:
    """A published incompatibility: `package` below `fixed_in` breaks with `other` at `broken_from` or later."""

    package: str
    fixed_in: str
    other: str
    broken_from: str
    reason: str


KNOWN_CONFLICTS = (
    # huggingface_hub 0.26.0 removed `cached_download`; diffusers imported it (utils/dynamic_modules_utils.py) at
    # `import diffusers` until 0.29.0, so every pipeline import fails with "cannot import name 'cached_download'".
    KnownConflict("diffusers", "0.29.0", "huggingface_hub", "0.26.0",
                  "diffusers < 0.29 imports huggingface_hub.cached_download, which huggingface_hub 0.26 removed"),
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _parse(version: str):
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version)
    except InvalidVersion:
        return None


def known_conflicts(installed: dict[str, str | None]) -> list[Check]:
    """Known-incompatible pairs among the installed versions."""
    found = []
    for c in KNOWN_CONFLICTS:
        mine, theirs = installed.get(c.package), installed.get(c.other)
        if not mine or not theirs or _parse(mine) is None or _parse(theirs) is None:
            continue
        if _parse(mine) < _parse(c.fixed_in) and _parse(theirs) >= _parse(c.broken_from):
            found.append(Check("fail", "incompatible", f"{c.package} {mine} with {c.other} {theirs}: {c.reason}; "
                                                       f'fix: pip install -U "{c.package}>={c.fixed_in}"'))
    return found


def requirement_problems(requires: dict[str, list[str]], installed: dict[str, str | None]) -> list[str]:
    """Declared requirements on the `installed` packages (version or None) that their versions do not meet."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    versions = {canonicalize_name(k): v for k, v in installed.items()}
    problems = []
    for dist, lines in requires.items():
        for line in lines:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            if name not in versions:
                continue
            have = versions[name]
            if have is None or not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist} needs {req.name}{req.specifier}, installed: {have or 'none'}")
    return problems


def version_checks() -> list[Check]:
    """Python and package versions, requirement conflicts and known-broken pairs."""
    checks = []
    py = platform.python_version()
    checks.append(Check("ok" if sys.version_info >= (3, 10) else "fail", "python", f"{py} ({sys.executable})"))
    installed = {dist: _version(dist) for dist in PACKAGES + REQUIRING}
    for dist in PACKAGES:
        checks.append(Check("ok" if installed[dist] else "fail", dist, installed[dist] or "not installed"))
    requires = {d: metadata.requires(d) or [] for d in REQUIRING if installed.get(d)}
    tested = requirement_problems({"svdrender": requires.pop("svdrender", [])}, installed)
    if tested:
        checks.append(Check("warn", "tested range", "; ".join(tested)))
    conflicts = requirement_problems(requires, installed)
    if conflicts:
        checks.append(Check("fail", "requirements", "; ".join(conflicts)))
    checks += known_conflicts(installed)
    return checks


def import_check() -> Check:
    """Import what rendering imports: a broken install shows here as one line."""
    try:
        from diffusers import StableVideoDiffusionPipeline  # noqa: F401
        from transformers import CLIPVisionModelWithProjection  # noqa: F401
    except Exception as exc:  # any import-time failure means no render can start
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("fail", "imports", f"{type(exc).__name__}: {message}")
    return Check("ok", "imports", "StableVideoDiffusionPipeline and CLIPVisionModelWithProjection import")


def device_checks() -> list[Check]:
    """torch's CUDA build, the GPU and its free memory, and the memory profile that fits it."""
    try:
        import torch
    except Exception as exc:
        return [Check("fail", "torch", f"does not import: {type(exc).__name__}: {exc}")]
    checks = []
    cuda_build = torch.version.cuda
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        name = torch.cuda.get_device_name(0)
        total_gib, free_gib = total / 2**30, free / 2**30
        checks.append(Check("ok", "cuda", f"available: CUDA {cuda_build}, {torch.cuda.device_count()} device(s)"))
        checks.append(Check("ok" if free_gib >= 8 else "warn", "gpu",
                            f"{name}: {free_gib:.1f} GiB free of {total_gib:.1f} GiB"))
        checks.append(Check("ok", "memory profile", memory_profile(name, total_gib)))
        return checks
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [Check("ok", "gpu", "Apple GPU (MPS); memory is shared with the system")]
    why = f"torch {torch.__version__} is a CPU-only build" if cuda_build is None else (
        f"torch is built for CUDA {cuda_build} but sees no GPU (driver missing or CUDA_VISIBLE_DEVICES empty)")
    return [Check("warn", "cuda", f"not available: {why}; builtin:tiny renders on the CPU, full-size SVD is very "
                                  "slow there"),
            Check("ok", "memory profile", memory_profile("cpu", 0.0))]


def memory_profile(device_name: str, total_vram_gib: float) -> str:
    """The memory profile svdrender recommends for a device, with why."""
    if total_vram_gib <= 0:
        return "off (no GPU: float32 on the CPU)"
    from .speed.settings import profile_settings

    settings = profile_settings("auto", device_name, total_vram_gib)
    notes = [settings.dtype] + (["torch.compile"] if settings.compile else []) + (
        [f"cpu offload: {settings.cpu_offload}"] if settings.cpu_offload != "none" else [])
    return f"{settings.profile} ({', '.join(notes)}) for {device_name} with {total_vram_gib:.0f} GiB"


def ffmpeg_check(formats: tuple[str, ...] = ("mp4",)) -> Check:
    """The ffmpeg imageio-ffmpeg ships runs and has the encoders the output formats need."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except Exception as exc:  # a missing or unrunnable binary: no video can be written
        return Check("fail", "ffmpeg", f"{type(exc).__name__}: {exc}")
    names = {line.split()[1] for line in encoders.stdout.splitlines() if len(line.split()) > 1}
    encoders_of = {name: f.encoder for name, f in FORMATS.items() if f.encoder}
    needed = {fmt: encoders_of[fmt].codec for fmt in formats if fmt in encoders_of}
    missing = [f"{codec} (for {fmt})" for fmt, codec in needed.items() if codec not in names]
    first = (version.splitlines()[0] if version else "ffmpeg").split(" Copyright")[0].replace(" version ", " ")
    if missing:
        return Check("fail", "ffmpeg", f"{first}: missing encoders {', '.join(missing)}")
    return Check("ok", "ffmpeg", f"{first} ({exe}): encodes {', '.join(sorted(needed)) or 'frames'}")


def hub_checks() -> list[Check]:
    """Where models are cached and whether downloads are allowed."""
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE)
    return [Check("ok", "hub cache", str(constants.HF_HUB_CACHE)),
            Check("ok", "offline mode", "on (HF_HUB_OFFLINE=1): models must already be cached" if offline else
                  "off: a missing model is downloaded on first use")]


def model_check(model, base_dir: Path) -> Check:
    """Whether a recipe's model can be loaded here without downloading (or, online, will be downloaded)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    from .recipe import BUILTIN_MODELS

    if model.is_builtin:
        if model.id in BUILTIN_MODELS:
            return Check("ok", "model", f"{model.id}: built in, nothing to download")
        return Check("fail", "model", f"unknown built-in model '{model.id}'; built-in models are "
                                      f"{', '.join(BUILTIN_MODELS)}")
    local = local_model_path(model.id, base_dir)
    if local.is_dir():
        missing = _missing_components(local, model.variant)
        return Check("fail" if missing else "ok", "model", f"local folder {local}" + (
            f": missing {', '.join(missing)}" if missing else ": has every component"))
    try:
        if "/" not in model.id:  # the engine loads hub models by org/name only
            raise HFValidationError(model.id)
        index = try_to_load_from_cache(model.id, "model_index.json", revision=model.revision)
    except HFValidationError:
        return Check("fail", "model", f"'{model.id}' is neither a local folder (looked in {local}) nor a hub id "
                                      "like org/name")
    where = f"{model.id} revision {model.revision}" + (f" variant {model.variant}" if model.variant else "")
    if isinstance(index, str):
        snapshot = Path(index).parent
        missing = _missing_components(snapshot, model.variant)
        if not missing:
            return Check("ok", "model", f"{where}: in the local cache (commit {snapshot.name})")
        detail = f"{where}: cached only in part (missing {', '.join(missing)})"
    else:
        detail = f"{where}: not in the local cache"
    if constants.HF_HUB_OFFLINE:
        return Check("fail", "model", f"{detail}, and HF_HUB_OFFLINE=1 forbids downloading it: download it once "
                                      f"where there is network (`hf download {model.id}`)")
    from . import hub

    commit, failure = hub.probe(model.id, model.revision)
    if failure is None:
        return Check("ok", "model", f"{detail}; verified on {hub.endpoint()} (commit {commit}), the first render "
                                    f"downloads it into {constants.HF_HUB_CACHE}")
    return Check("unknown" if failure.unverifiable else "fail", "model", failure.message)


def _missing_components(folder: Path, variant: str | None) -> list[str]:
    """Pipeline components named by model_index.json that have no files (no weights, for weighted ones)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json"]
    missing = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        files = [p.name for p in sub.iterdir()] if sub.is_dir() else []
        weighted = any(f.endswith(WEIGHT_SUFFIXES) for f in files)
        if not files:
            missing.append(name)
        elif variant and weighted and not any(f.endswith(tuple(f".{variant}{s}" for s in WEIGHT_SUFFIXES))
                                              for f in files):
            missing.append(f"{name} ({variant} weights)")
    return missing


def recipe_checks(path: Path) -> tuple[list[Check], bool]:
    """The recipe validates, its formats can be encoded, and its model is available; (checks, recipe is valid)."""
    from .recipe import load_recipe

    try:
        recipe = load_recipe(path)
    except RecipeError as exc:
        lines = [str(p) for p in exc.problems]
        return [Check("fail", "recipe", f"{path}: {len(lines)} problem(s)")] + [Check("fail", "", line)
                                                                               for line in lines], False
    jobs = sum(len(i.presets) * len(i.seeds) for i in recipe.items)
    return [Check("ok", "recipe", f"{path}: {len(recipe.items)} items, {jobs} jobs, output {recipe.output_dir}"),
            ffmpeg_check(tuple(f for f in recipe.formats if f != "frames")),
            model_check(recipe.model, recipe.path.parent)], True


def run_doctor(recipe: Path | None = None, echo: Callable[[str], None] = print) -> int:
    """Print every check; return EXIT_VERIFIED, EXIT_WILL_FAIL, EXIT_USAGE (invalid recipe) or EXIT_UNVERIFIED."""
    checks = version_checks() + [import_check()] + device_checks() + hub_checks()
    valid = True
    if recipe is None:
        checks.append(ffmpeg_check())
    else:
        found, valid = recipe_checks(recipe)
        checks += found
    for check in checks:
        echo(str(check).rstrip())
    failed = sum(1 for c in checks if c.status == "fail" and c.name)
    warned = sum(c.status == "warn" for c in checks)
    unknown = sum(c.status == "unknown" for c in checks)
    counts = f"{failed} failed, {warned} warnings" + (f", {unknown} could not be verified" if unknown else "")
    if failed:
        verdict = "rendering will fail here: fix the failed checks before rendering"
    elif unknown:
        verdict = "rendering may work here, but not everything could be verified (offline or the hub unreachable)"
    else:
        verdict = "rendering can work here (verified)"
    echo(f"{counts}: {verdict}")
    if not valid:
        return EXIT_USAGE
    return EXIT_WILL_FAIL if failed else EXIT_UNVERIFIED if unknown else EXIT_VERIFIED
