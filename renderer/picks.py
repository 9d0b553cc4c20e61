"""Picks: the jobs a reviewer marked on the contact sheet and exported as `picks.json`, and what `--picks` renders.

The contact sheet writes picks files from `picks_template`; this module is the only code that reads them. A picks
file is input, often edited by hand or picked up from the wrong folder: reading is bounded, every problem is
reported at once as file:line:col: $.path: message, and each job id must name a job of the recipe given, so no id
can lead anywhere a recipe's own jobs cannot (ids follow the name rule of item and preset folders).
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import scheduler_presets
from .errors import PicksError, Problem, UsageError
from .paths import Unreadable, name_problem, read_bounded
from .recipe import MAX_SEED, Recipe, builtin_preset, combination_problems, suggest
from .yamlio import NotUtf8, json_path, utf8_text

PICKS_KIND = "svdrender.picks"
PICKS_VERSION = 1
# An exported file of 10,000 ids (the schema's maxItems) is ~400 KB.
MAX_PICKS_BYTES = 1024 * 1024
_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "picks.schema.json"
_SEED = re.compile(r"\Aseed-(0|[1-9][0-9]*)\Z")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class PickedJob:
    """One picked job id, split, with where the file names it."""

    id: str
    item: str
    preset: str
    seed: int
    index: int = field(default=0, compare=False)  # in the file's `jobs` list
    line: int | None = field(default=None, compare=False)
    col: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Picks:
    """A read picks file: its well-formed job ids, and what is wrong with the file itself (`narrow` reports those
    with the problems only the recipe shows, all at once)."""

    file: str
    recipe: str | None
    recipe_path: str | None
    run_id: str | None
    output_dir: str | None
    jobs: tuple[PickedJob, ...]
    problems: tuple[Problem, ...] = ()
    recipe_at: tuple[int, int] | None = field(default=None, compare=False)  # line, col of `recipe`


def picks_template(*, recipe: str | None, recipe_path: str | None, run_id: str | None,
                   output_dir: str | None) -> dict[str, Any]:
    """A picks document without jobs: the contact sheet fills in `jobs` with the marked ids when it exports."""
    return {"kind": PICKS_KIND, "version": PICKS_VERSION, "recipe": recipe, "recipe_path": recipe_path,
            "run_id": run_id, "output_dir": output_dir, "jobs": []}


@lru_cache(maxsize=1)
def schema() -> dict:
    """The picks JSON Schema (schemas/picks.schema.json)."""
    return json.loads(_SCHEMA.read_text(encoding="utf-8"))


def _read_bounded(path: Path, file: str) -> bytes:
    """The bytes of `path` if it is a regular file (symlinks followed: the user named it) of at most
    MAX_PICKS_BYTES; a FIFO or device is refused without waiting on it."""
    try:
        return read_bounded(path, MAX_PICKS_BYTES)
    except FileNotFoundError:
        message = "no such file"
    except Unreadable as exc:
        message = {
            "folder": "is a folder, not a picks file",
            "special": "is not a regular file",
            "too large": (f"is {exc.size:,} bytes" if exc.size is not None else f"is more than {MAX_PICKS_BYTES:,} "
                          "bytes") + f"; a picks file is at most {MAX_PICKS_BYTES:,} bytes",
        }.get(exc.kind, f"cannot be read: {exc.detail}")
    raise PicksError([Problem(file, None, None, "", message)])


class _Lines:
    """Line and column (from 1) of offsets in a text, by bisection (10,000 ids are located in milliseconds)."""

    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1


def _positions(text: str) -> tuple[dict[tuple, int], list[tuple[tuple, int]]]:
    """Where the top-level keys and their direct elements start in `text` (valid JSON), and any key repeated in the
    top-level object. Two levels are all a valid picks file has; deeper values are skipped whole."""
    decoder = json.JSONDecoder()
    positions: dict[tuple, int] = {}
    repeated: list[tuple[tuple, int]] = []

    def skip(i: int) -> int:
        return _WHITESPACE.match(text, i).end()

    def walk(i: int, path: tuple, depth: int) -> int:
        i = skip(i)
        positions.setdefault(path, i)
        opening = text[i]
        if depth >= 2 or opening not in "{[":
            return decoder.raw_decode(text, i)[1]
        closing = "}" if opening == "{" else "]"
        i = skip(i + 1)
        index = 0
        seen = set()
        while text[i] != closing:
            if opening == "{":
                key, end = json.decoder.scanstring(text, i + 1)
                if key in seen:
                    repeated.append((path + (key,), i))
                seen.add(key)
                positions.setdefault(path + (key,), i)  # a member is located at its key
                i = walk(skip(end) + 1, path + (key,), depth + 1)  # past the ':'
            else:
                i = walk(i, path + (index,), depth + 1)
                index += 1
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
        return i + 1

    walk(0, (), 0)
    return positions, repeated


def _shown(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def _id_problem(job_id: str) -> str | None:
    """Why `job_id` is not of the form item/preset/seed-N with safe names, or None."""
    parts = job_id.split("/")
    if len(parts) != 3 or not _SEED.match(parts[2]) or any(name_problem(p) for p in parts[:2]):
        return (f"{_shown(job_id)} is not a job id: item/preset/seed-N, with names of letters, digits, '.', '_' and "
                "'-'")
    digits = parts[2][5:]
    if len(digits) > len(str(MAX_SEED)) or int(digits) > MAX_SEED:
        return f"{_shown(job_id)} names a seed above the largest seed {MAX_SEED} (2**63 - 1)"
    return None


def _schema_messages(data: Any) -> list[tuple[tuple, str]]:
    """(path, message) for everything the schema refuses, except the job id pattern (`_id_problem` says more)."""
    import jsonschema

    found = []
    for error in jsonschema.Draft202012Validator(schema()).iter_errors(data):
        path, value, validator = tuple(error.absolute_path), error.instance, error.validator
        if validator == "pattern":
            continue
        if validator == "additionalProperties":
            allowed = list(schema()["properties"])
            found += [(path + (key,), f"unknown key '{key}'{suggest(key, allowed)}") for key in value
                      if key not in allowed]
        elif validator == "required":
            found += [(path, f"missing required key '{key}'") for key in error.validator_value if key not in value]
        elif validator == "type":
            wanted = error.validator_value
            wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
            found.append((path, f"expected {wanted}, got {json.dumps(value)[:80]}"))
        elif validator == "const":
            found.append((path, f"must be {json.dumps(error.validator_value)}, got {json.dumps(value)[:80]}"))
        elif validator == "minItems":
            found.append((path, "no jobs: mark at least one job on the contact sheet, then export"))
        elif validator == "maxItems":
            found.append((path, f"lists {len(value):,} jobs; a picks file lists at most {error.validator_value:,}"))
        elif validator == "uniqueItems":
            seen = set()
            for index, v in enumerate(value):
                key = json.dumps(v, sort_keys=True)
                if key in seen:
                    found.append((path + (index,), f"{_shown(v) if isinstance(v, str) else key[:80]} is listed "
                                                   "twice; keep one"))
                    break
                seen.add(key)
        else:
            found.append((path, error.message[:200]))
    return found


def read_picks(path: Path) -> Picks:
    """Read and check a picks file on its own, not yet against a recipe. PicksError when it is no picks file at all
    (unreadable, too large, not JSON, another kind of file); any other problem is kept in `problems`."""
    file = str(path)
    raw = _read_bounded(Path(path), file)
    try:
        text = utf8_text(raw)
    except NotUtf8 as exc:
        raise PicksError([Problem(file, exc.line, exc.col, "", "is not UTF-8 text; a picks file is JSON")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PicksError([Problem(file, exc.lineno, exc.colno, "", f"not JSON: {exc.msg}; a picks file is JSON, "
                                                                   "as the contact sheet exports it")]) from None
    except (ValueError, RecursionError) as exc:  # an integer of 5,000 digits; nesting deeper than Python recurses
        raise PicksError([Problem(file, None, None, "", f"not JSON svdrender can read: "
                                                        f"{str(exc)[:120] or type(exc).__name__}")]) from None
    positions, repeated = _positions(text)
    lines = _Lines(text)

    def problem(where: tuple, message: str) -> Problem:
        located = next(positions[where[:n]] for n in range(len(where), -1, -1) if where[:n] in positions)
        line, col = lines(located)
        return Problem(file, line, col, json_path(where), message)

    # Another file (a manifest, a sidecar, a recipe as JSON) is named as such, not picked apart key by key; a picks
    # file with a typo in `kind` still gets every problem listed.
    looks_like_picks = isinstance(data, dict) and (data.get("kind") == PICKS_KIND or
                                                   ("kind" not in data and "jobs" in data))
    if not looks_like_picks:
        kind = f" (its kind is {json.dumps(data['kind'])[:80]})" if isinstance(data, dict) and "kind" in data else ""
        raise PicksError([problem(("kind",) if kind else (), f"not a picks file{kind}; export picks from the contact "
                                                            "sheet (index.html in the output folder)")])
    problems = [Problem(file, *lines(offset), json_path(where), f"'{where[-1]}' is given twice; keep one")
                for where, offset in repeated]
    problems += [problem(where, message) for where, message in _schema_messages(data)]
    jobs = data.get("jobs") if isinstance(data.get("jobs"), list) else []
    if len(jobs) > schema()["properties"]["jobs"]["maxItems"]:
        jobs = []  # one line says the list is too long, not one line per id
    picked = []
    for index, job_id in enumerate(jobs):
        if not isinstance(job_id, str):
            continue  # the schema has said so
        reason = _id_problem(job_id)
        if reason:
            problems.append(problem(("jobs", index), reason))
            continue
        item, preset, seed = job_id.split("/")
        line, col = lines(positions[("jobs", index)])
        picked.append(PickedJob(job_id, item, preset, int(seed[5:]), index, line, col))

    def text_of(key: str) -> str | None:
        return data[key] if isinstance(data.get(key), str) else None  # anything else is among the problems

    return Picks(file=file, recipe=text_of("recipe"), recipe_path=text_of("recipe_path"), run_id=text_of("run_id"),
                 output_dir=text_of("output_dir"), jobs=tuple(picked), problems=tuple(problems),
                 recipe_at=lines(positions[("recipe",)]) if ("recipe",) in positions else None)


def _preset_name(recipe: Recipe, name: str, spec: str) -> str:
    """The preset `--preset spec` names: one the recipe defines, or a built-in one (aliases allowed)."""
    if name in recipe.presets:
        return name
    builtin = builtin_preset(name)
    if builtin is not None:
        return builtin.name
    refused = scheduler_presets.refusal(name)
    if refused is not None:
        raise UsageError(f"--preset {spec}: '{name}' is wrong for SVD: {refused.reason}; use "
                         f"'{refused.suggestion}' instead")
    known = list(recipe.presets) + list(scheduler_presets.PRESETS)
    raise UsageError(f"--preset {spec}: '{name}' is neither a preset of {recipe.path.name} nor a built-in one"
                     f"{suggest(name, known)} (`svdrender presets` lists the built-in ones)")


def _targets(recipe: Recipe, picks: Picks, specs: tuple[str, ...]) -> dict[str, str]:
    """Each picked preset → the preset to render its picks with, from `--preset NAME` (every pick) and
    `--preset FROM=NAME` (the picks of preset FROM; it wins over a plain NAME)."""
    picked = list(dict.fromkeys(job.preset for job in picks.jobs))
    default, mapping = None, {}
    for spec in specs:
        source, _, name = spec.rpartition("=")
        if not source:
            if default is not None:
                raise UsageError(f"--preset {default[0]} and --preset {spec} both name the preset for every pick; "
                                 "give one, or FROM=NAME for the picks of preset FROM")
            default = (spec, _preset_name(recipe, name, spec))
        elif source in mapping:
            raise UsageError(f"--preset {source}=… is given twice; give one preset for the picks of '{source}'")
        elif source not in picked:
            raise UsageError(f"--preset {spec}: no picked job has preset '{source}'{suggest(source, picked)} "
                             f"(the picks have {', '.join(picked)})")
        else:
            mapping[source] = _preset_name(recipe, name, spec)
    for source in picked:
        if source not in mapping and default is None:
            example = next(job.id for job in picks.jobs if job.preset == source)
            raise UsageError(f"--preset: the picks of preset '{source}' (such as {example}) have no preset to render "
                             f"with; add --preset {source}=NAME, or a plain --preset NAME for every pick")
    return {source: mapping.get(source) or default[1] for source in picked}


def _known_preset(recipe: Recipe, name: str) -> bool:
    builtin = builtin_preset(name)
    return name in recipe.presets or (builtin is not None and builtin.name == name)


def _seeds_shown(seeds) -> str:
    shown = ", ".join(str(s) for s in list(seeds)[:8])
    return shown + (", …" if len(seeds) > 8 else "")


def narrow(recipe: Recipe, picks: Picks, presets: tuple[str, ...] = ()) -> Recipe:
    """`recipe` reduced to exactly the jobs `picks` names; with `presets` (`--preset NAME`, `--preset FROM=NAME`),
    to each picked item and seed under the preset its pick maps to instead, as new jobs beside the picked ones. Items
    keep the recipe's order; presets the item's order, then the picks'.

    A picked job must be an item and seed of the recipe under a preset the recipe defines or svdrender ships (the
    jobs the recipe plans, and those an earlier `--preset` rendered from them); PicksError names every other one."""
    problems = list(picks.problems)
    if picks.recipe is not None and picks.recipe != recipe.name:
        line, col = picks.recipe_at or (None, None)
        hint = f" ({picks.recipe_path})" if picks.recipe_path else ""
        problems.append(Problem(picks.file, line, col, "$.recipe",
                                f"these are picks of recipe '{picks.recipe}'{hint}, not of '{recipe.name}' "
                                f"({recipe.path}); give the recipe they were picked from"))
    items = {item.name: item for item in recipe.items}
    seeds = {item.name: set(item.seeds) for item in recipe.items}
    for job in picks.jobs:
        if job.item not in items:
            why = f"the recipe has no item '{job.item}'{suggest(job.item, items)}"
        elif job.seed not in seeds[job.item]:
            why = f"item '{job.item}' has no seed {job.seed} (its seeds: {_seeds_shown(items[job.item].seeds)})"
        elif not _known_preset(recipe, job.preset):
            why = f"the recipe has no preset '{job.preset}'{suggest(job.preset, items[job.item].presets)}"
        else:
            continue
        problems.append(Problem(picks.file, job.line, job.col, json_path(("jobs", job.index)),
                                f"job '{job.id}' is not a job of {recipe.path.name}: {why}"))
    if problems:
        raise PicksError(problems)
    targets = _targets(recipe, picks, tuple(presets)) if presets else {}
    all_presets = dict(recipe.presets)
    picked: dict[str, dict[str, set[int]]] = {}  # item → preset → seeds
    for job in picks.jobs:
        name = targets.get(job.preset, job.preset)
        picked.setdefault(job.item, {}).setdefault(name, set()).add(job.seed)
        if name not in all_presets:
            all_presets[name] = builtin_preset(name)
    # One item per preset with exactly its picked seeds: the plan's item × preset × seed is then exactly the picks.
    narrowed = []
    for item in recipe.items:
        by_preset = picked.get(item.name, {})
        for name in [p for p in item.presets if p in by_preset] + [p for p in by_preset if p not in item.presets]:
            narrowed.append(replace(item, presets=(name,), seeds=tuple(s for s in item.seeds if s in by_preset[name])))
    result = replace(recipe, presets=all_presets, items=tuple(narrowed))
    # The recipe may never have paired these items with these presets: check what only the pair shows.
    found = [f"{item.name}/{name}: {message}" for item in result.items for name in item.presets
             if name in set(targets.values()) for _, message in combination_problems(result, all_presets[name], item)]
    if found:
        raise UsageError("--preset: " + "; ".join(dict.fromkeys(found)))
    return result
