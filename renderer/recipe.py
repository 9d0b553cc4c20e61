"""Recipe files → a validated, frozen `Recipe`: JSON Schema first, then the checks a schema cannot express.

Every problem in a recipe (and in the files it includes) is collected and reported at once, each located at
file:line:col with its JSON path. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators

from . import images, motion, scheduler_presets
from .speed.profiles import PerformanceRequest
from .scheduler_presets import SchedulerChoice
from .errors import ImageError, Problem, RecipeError
from .model_configs import read_unet_config
from .model_families import BUILTIN_CONFIGS, BUILTIN_SVD_XT_RANDOM, BUILTIN_TINY, family_of  # noqa: F401 (re-export)
from .paths import (GlobRefused, glob_files, is_dir, is_file, is_inside, local_model_path, name_problem,
                    repository_root)
from .yamlio import YAML11_BOOLEAN_WORDS, Document, json_path, load

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "recipe.schema.json"
MAX_INCLUDE_DEPTH = 8
BUILTIN_MODELS = tuple(BUILTIN_CONFIGS)
# Seeds are 0 <= seed < 2**63: a signed 64-bit integer holds every one, so torch generators, the manifests' JSON
# readers (int64 columns) and job ids agree on it; the schema bounds listed seeds, this bounds the end of a sweep.
MAX_SEED = 2**63 - 1
# A hub repository id as huggingface_hub accepts it: org/name, letters, digits, '-', '_', '.', at most 96 each.
_HUB_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")


def _strict_integer(checker, instance) -> bool:
    # JSON Schema counts 64.0 as an integer; a recipe that writes 64.0 where a count is meant has made a mistake.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer))


def is_hub_id(model_id: str) -> bool:
    """Whether `model_id` has the shape of a Hugging Face hub repository id, `org/name`."""
    return bool(_HUB_ID.match(model_id)) and ".." not in model_id and "--" not in model_id


@lru_cache(maxsize=1)
def schema() -> dict:
    """The recipe JSON Schema (schemas/recipe.schema.json)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def setting_defaults() -> dict[str, Any]:
    """Built-in defaults of every SVD setting, read from the schema (the one place they are written)."""
    props = schema()["$defs"]["settings"]["properties"]
    return {name: spec["default"] for name, spec in props.items()}


SETTING_NAMES = tuple(schema()["$defs"]["settings"]["properties"])


@dataclass(frozen=True)
class ModelSpec:
    """Which pipeline to load."""

    id: str
    revision: str = "main"
    variant: str | None = None
    dtype: str = "auto"

    @property
    def is_builtin(self) -> bool:
        return self.id.startswith("builtin:")


@dataclass(frozen=True)
class Settings:
    """Every resolved setting of one job: SVD's, then how its frames loop and play (renderer.motion)."""

    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    decode_chunk_size: int | None
    fit: str
    segments: int
    loop: str
    crossfade_frames: int
    interpolation: str
    output_fps: int

    @property
    def motion(self) -> motion.Motion:
        """The settings that loop and retime the frames after the model made them."""
        return motion.Motion(loop=self.loop, crossfade_frames=self.crossfade_frames, interpolation=self.interpolation,
                             fps=self.fps, output_fps=self.output_fps)

    @property
    def frame_count(self) -> int:
        """Frames the model makes for a job: each segment after the first drops its first frame, which stands for
        the previous segment's last one (the frame it was conditioned on)."""
        return self.num_frames + (self.segments - 1) * (self.num_frames - 1)


# Settings whose default the model decides (its frame count; the conditioning some models were fine-tuned with):
# `svdrender plan` says where each job's value of these came from.
MODEL_SETTINGS = ("num_frames", "fps", "motion_bucket_id")
FROM_CONFIG = "from the model's unet/config.json"
SVDRENDER_DEFAULT = "svdrender default"


@dataclass(frozen=True)
class ModelDefaults:
    """What a model decides about its jobs' settings (under anything the recipe sets), and where each fact came
    from: its unet config first, then the known family, then svdrender's default (the schema's)."""

    values: tuple[tuple[str, Any], ...] = ()  # setting → the model's default
    sources: tuple[tuple[str, str], ...] = ()  # setting → FROM_CONFIG or "known family: SVD-XT 1.1"
    fixed: tuple[tuple[str, Any], ...] = ()  # settings the model was fine-tuned with fixed, and their values
    family: str | None = None
    config: str | None = None  # the unet config used: a file, or a built-in model's id
    warnings: tuple[Problem, ...] = ()  # a config that was ignored, and why
    uncached: bool = False  # a hub model whose config is not in the local cache (yet)

    @property
    def trained_frames(self) -> int | None:
        """The frame count the model was trained for, when its config or family says."""
        return dict(self.values).get("num_frames")


def model_defaults(model: ModelSpec, base_dir: Path) -> ModelDefaults:
    """The defaults `model` decides, read without torch and without downloading anything."""
    config = read_unet_config(model.id, model.revision, base_dir)
    family = family_of(model.id)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ignored: tuple[str, str] | None = None  # (JSON path, why) of a config, or a value in it, that is ignored
    if config is not None and config.data is None:
        ignored = ("", f"this unet config {config.problem}")
    elif config is not None and "num_frames" in config.data:
        frames = config.data["num_frames"]
        spec = schema()["$defs"]["settings"]["properties"]["num_frames"]
        if _Validator(spec).is_valid(frames):
            values["num_frames"], sources["num_frames"] = frames, FROM_CONFIG
        else:
            shown = repr(frames) if len(repr(frames)) <= 40 else repr(frames)[:37] + "..."
            ignored = ("$.num_frames", f"num_frames {shown} is not a frame count a recipe may ask for (an integer from "
                                       f"{spec['minimum']} to {spec['maximum']})")
    if "num_frames" not in values and family:
        values["num_frames"], sources["num_frames"] = family.num_frames, f"known family: {family.name}"
    for name, value in family.fixed if family else ():
        values[name], sources[name] = value, f"known family: {family.name}"
    warnings = ()
    if ignored is not None:
        instead = (f"{values['num_frames']} ({sources['num_frames']})" if "num_frames" in values else
                   f"{setting_defaults()['num_frames']} ({SVDRENDER_DEFAULT})")
        warnings = (Problem(config.file, None, None, ignored[0],
                            f"{ignored[1]}; ignored: the model's default num_frames is {instead}", warning=True),)
    return ModelDefaults(values=tuple(values.items()), sources=tuple(sources.items()),
                         fixed=family.fixed if family else (), family=family.name if family else None,
                         config=config.file if config is not None and config.data is not None else None,
                         warnings=warnings, uncached=config is None and is_hub_id(model.id))


@dataclass(frozen=True)
class Preset:
    """A named scheduler choice plus the settings it overrides."""

    name: str
    scheduler: str  # canonical built-in preset name
    sigmas: str | tuple[float, ...] | None
    scheduler_options: tuple[tuple[str, Any], ...]
    overrides: tuple[tuple[str, Any], ...]
    description: str
    builtin: bool

    def scheduler_choice(self, num_inference_steps: int) -> SchedulerChoice:
        """What this preset asks of the scheduler at a given step count."""
        return SchedulerChoice(self.scheduler, num_inference_steps, self.sigmas, self.scheduler_options)


@dataclass(frozen=True)
class Item:
    """One input image with its presets, seeds and setting overrides."""

    name: str
    image: Path
    image_display: str
    presets: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: tuple[tuple[str, Any], ...]
    origin: tuple = ()  # JSON path of the recipe entry that made this item, for locating later errors


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, ready to be planned."""

    path: Path
    name: str
    sha256: str
    model: ModelSpec
    output_dir: Path
    formats: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    presets: dict[str, Preset] = field(hash=False)
    items: tuple[Item, ...]
    files: tuple[Path, ...]
    performance: PerformanceRequest = PerformanceRequest()  # the recipe's `performance:` section
    smoke: bool = False  # rewritten by renderer.smoke for a --smoke run
    model_defaults: ModelDefaults = ModelDefaults()
    # Where the recipe sets each model setting: JSON path → "recipe line 12" (or the included file's name).
    setting_origins: dict[tuple, str] = field(default_factory=dict, hash=False, compare=False)
    warnings: tuple[Problem, ...] = ()  # values that render, but not as the model was trained; ignored configs


class _Collector:
    """Accumulates problems, locating each JSON path in the document that holds it."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.owners: dict[tuple, Document] = {}
        self.main: Document | None = None
        self.bad: set[tuple] = set()  # paths already reported: checks that read them are skipped
        self.unreadable: set[tuple] = set()  # values refused while loading: the schema has nothing to add

    def broken(self, path: tuple) -> bool:
        """Whether `path`, or a mapping or list holding it, has been reported (the whole document excepted)."""
        return any(path[:n] in self.bad for n in range(1, len(path) + 1))

    def take(self, doc: Document) -> None:
        """Report the values `doc` refused while loading, and skip every check that would read them."""
        self.problems.extend(doc.problems)
        self.bad |= doc.broken
        self.unreadable |= doc.broken

    def doc_for(self, path: tuple) -> Document:
        probe = path
        while probe:
            if probe in self.owners:
                return self.owners[probe]
            probe = probe[:-1]
        return self.main

    def add(self, path: tuple, message: str, *, key: bool = False, shown: tuple | None = None) -> None:
        """Report `message` at `path` (at its key, with `key`), naming JSON path `shown` if given (a mapping whose
        key is at fault, rather than a path spelled with that key)."""
        doc = self.doc_for(path)
        loc = doc.locate(path, key=key)
        self.problems.append(Problem(doc.file, loc.line if loc else None, loc.col if loc else None,
                                     json_path(path if shown is None else shown), message))
        self.bad.add(path)

    def warn(self, path: tuple | None, message: str) -> None:
        """Note a warning at `path` (None: the recipe as a whole); the recipe stays valid."""
        if path is None:
            self.warnings.append(Problem(self.main.file, None, None, "", message, warning=True))
            return
        doc = self.doc_for(path)
        loc = doc.locate(path)
        self.warnings.append(Problem(doc.file, loc.line if loc else None, loc.col if loc else None, json_path(path),
                                     message, warning=True))

    def line_of(self, path: tuple, *, key: bool = False) -> str:
        """`line:col` of `path` (of its key, with `key`), for messages that point at a second place."""
        loc = self.doc_for(path).locate(path, key=key)
        return f"{loc.line}:{loc.col}" if loc else "?"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _outside(rel: str, path: Path, root: Path | None) -> str | None:
    """Why input `rel` may not be read (it resolves outside `root`), or None; root None allows anything."""
    if root is None or is_inside(root, path):
        return None
    return (f"{rel} resolves to {path.resolve()}, outside the recipe's repository {root}; move it inside, or set "
            "`allow_inputs_outside: true` at the top of the recipe")


def _merge_includes(doc: Document, base_dir: Path, out: _Collector, depth: int, seen: tuple[Path, ...],
                    root: Path | None) -> dict:
    """Merge included files' presets and defaults under this document's own (this document wins); includes must
    resolve inside `root` (None: anywhere)."""
    data = dict(doc.data)
    includes = data.get("include", [])
    if not isinstance(includes, list):
        return data
    sections: tuple[tuple[str, dict], ...] = (("presets", {}), ("defaults", {}))
    for index, rel in enumerate(includes):
        if not isinstance(rel, str):
            continue
        target = (base_dir / rel).resolve()
        refusal = _outside(rel, base_dir / rel, root)
        if refusal:
            loc = doc.locate(("include", index))
            out.problems.append(Problem(doc.file, loc.line if loc else None, loc.col if loc else None,
                                        json_path(("include", index)), refusal))
            continue
        if target in seen:
            out.add(("include", index), f"include cycle: {rel} includes this file again")
            continue
        if depth >= MAX_INCLUDE_DEPTH:
            out.add(("include", index), f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels")
            continue
        if not is_file(target):
            out.add(("include", index), f"included file {rel} " + (
                "is not a regular file" if os.path.lexists(target) else "does not exist"))
            continue
        try:
            sub = load(target, _display(target), keep_going=True)
        except RecipeError as exc:
            out.problems.extend(exc.problems)
            continue
        out.take(sub)
        if not isinstance(sub.data, dict):
            out.problems.append(Problem(sub.file, 1, 1, "$", "an included file must be a mapping"))
            continue
        for key in sub.data:
            if key not in ("version", "presets", "defaults", "include"):
                loc = sub.keys.get((key,))
                out.problems.append(Problem(sub.file, loc.line if loc else None, loc.col if loc else None,
                                            json_path((key,)),
                                            f"'{key}' cannot be shared through include; an included file "
                                            "holds only presets and defaults"))
        sub_data = _merge_includes(sub, target.parent, out, depth + 1, seen + (target,), root)
        for section, merged in sections:
            for name, value in (sub_data.get(section) or {}).items():
                merged[name] = value
                out.owners[(section, name)] = sub
    for section, merged in sections:
        own = data.get(section)
        if own is not None and not isinstance(own, dict):
            continue  # the schema reports it
        for name in own or {}:
            out.owners.pop((section, name), None)  # this document's own entries win, and are located here
        if merged or own:
            data[section] = {**merged, **(own or {})}
    return data


def _allowed_keys(node: dict) -> set[str]:
    """Property names a schema object node accepts, following $ref and allOf (for "did you mean")."""
    defs = schema()["$defs"]
    keys = set(node.get("properties", {}))
    for sub in node.get("allOf", []):
        keys |= _allowed_keys(sub)
    ref = node.get("$ref")
    if ref:
        keys |= _allowed_keys(defs[ref.rsplit("/", 1)[-1]])
    return keys


def suggest(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _explain_yaml_surprise(doc: Document, path: tuple, value: Any) -> str:
    raw = doc.raw.get(path)
    if raw is None:
        return ""
    if isinstance(value, bool) and raw.lower() in YAML11_BOOLEAN_WORDS - {"true", "false"}:
        return f" (YAML reads unquoted {raw} as {str(value).lower()}; quote it as \"{raw}\" if you meant text)"
    if isinstance(value, str):
        try:
            number = float(raw)
        except ValueError:
            return ""
        shown = int(number) if number.is_integer() else number
        return f" (YAML reads {raw} as text, not a number; write {shown})"
    return ""


def _schema_problems(data: dict, out: _Collector) -> None:
    for error in _Validator(schema()).iter_errors(data):
        _report_schema_error(error, out)


def _report_schema_error(error, out: _Collector) -> None:
    path = tuple(error.absolute_path)
    validator = error.validator
    if any(path[:n] in out.unreadable for n in range(len(path) + 1)):
        return  # refused while loading, and reported then
    if validator in ("pattern", "propertyNames"):
        return  # names: the schema's pattern guides editors; `name_problem` is the rule, checked on every name
    if validator in ("minimum", "maximum", "multipleOf") and error.schema.get("type") == "integer" \
            and not _strict_integer(None, error.instance):
        return  # "expected integer" says it already; a range on a non-integer only repeats the mistake
    value = error.instance
    doc = out.doc_for(path)
    if validator == "oneOf" and path[-2:-1] == ("items",) and isinstance(value, dict):
        # Checked before the branches' own errors: with both keys, every branch passes and there are none.
        has = [k for k in ("image", "glob") if k in value]
        if not has:
            out.add(path, "an item needs an `image` or a `glob`")
            return
        if len(has) == 2:
            out.add(path + ("glob",), "an item has either `image` or `glob`, not both", key=True)
            return
    if validator in ("oneOf", "anyOf") and error.context:
        # Report the branch that got furthest, which is the one the user most likely meant.
        best = max(error.context, key=lambda e: (len(e.absolute_path), -len(list(e.context or []))))
        if len(best.absolute_path) > len(path) or best.validator not in ("type",):
            # Every mistake of that branch, not just the deepest: `model: {variant: []}` also lacks its `id`.
            branch = best.relative_schema_path[0]
            for sub in error.context:
                if sub.relative_schema_path[0] == branch:
                    _report_schema_error(sub, out)
            return
        if isinstance(value, (str, int, float, bool)) or value is None:
            types = sorted({c.schema.get("type") for c in error.context if isinstance(c.schema.get("type"), str)})
            wanted = " or ".join(types) if types else "another value"
            out.add(path, f"expected {wanted}, got {_type_name(value)} {value!r}" + _explain_yaml_surprise(doc, path,
                                                                                                            value))
            return
        _report_schema_error(best, out)
        return
    if validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = _allowed_keys(error.schema)
        for key in value:
            if key in allowed:
                continue
            reason = scheduler_presets.REFUSED_OPTIONS.get(key)
            if reason:
                out.add(path + (key,), f"'{key}' is refused: {reason}", key=True)
            else:
                out.add(path + (key,), f"unknown key '{key}'{suggest(key, allowed)}", key=True)
        return
    if validator == "required":
        missing = [k for k in error.validator_value if k not in value]
        out.add(path, f"missing required key '{missing[0]}'" if missing else error.message)
        return
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        out.add(path, f"expected {expected}, got {_type_name(value)} {value!r}"
                + _explain_yaml_surprise(doc, path, value))
        return
    if validator == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value)
        out.add(path, f"{value!r} is not one of {choices}{suggest(value, error.validator_value)}"
                + _explain_yaml_surprise(doc, path, value))
        return
    if validator == "const":
        out.add(path, f"must be {error.validator_value!r}, got {value!r}")
        return
    if validator == "multipleOf":
        lower = value - value % error.validator_value
        out.add(path, f"{value} is not a multiple of {error.validator_value}; "
                      f"use {lower} or {lower + error.validator_value}")
        return
    if validator in ("minimum", "maximum"):
        word = "at least" if validator == "minimum" else "at most"
        out.add(path, f"{value} is out of range: must be {word} {error.validator_value}")
        return
    if validator == "uniqueItems":
        out.add(path, "has duplicate entries")
        return
    if validator in ("minItems", "minLength"):
        out.add(path, "must not be empty")
        return
    if validator == "maxItems":
        out.add(path, f"has more than {error.validator_value} entries")
        return
    out.add(path, error.message)


def _mapping(data: dict, key: str) -> dict:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _model_spec(raw: Any) -> ModelSpec:
    if raw is None:
        return ModelSpec(id=schema()["properties"]["model"]["default"])
    if isinstance(raw, str):
        return ModelSpec(id=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return ModelSpec(id="")  # the schema has reported it; the recipe is refused
    return ModelSpec(id=raw["id"], revision=raw.get("revision", "main"), variant=raw.get("variant"),
                     dtype=raw.get("dtype", "auto"))


def _check_model(data: dict, base_dir: Path, out: _Collector) -> None:
    """The model id names something loadable: a known built-in model, a hub id (org/name) or an existing folder."""
    raw = data.get("model")
    where = ("model", "id") if isinstance(raw, dict) else ("model",)
    model_id = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(model_id, str) or not model_id or out.broken(where):
        return
    if model_id.startswith("builtin:"):
        if model_id not in BUILTIN_MODELS:
            out.add(where, f"unknown built-in model '{model_id}'{suggest(model_id, BUILTIN_MODELS)}; built-in "
                           f"models are {', '.join(BUILTIN_MODELS)}")
        return
    local = local_model_path(model_id, base_dir)
    if is_dir(local):
        # Planning fingerprints the folder's files, and loading needs this file: `/` or `~` must not pass as a model.
        if not is_file(local / "model_index.json"):
            out.add(where, f"model folder {model_id} has no model_index.json; a local model is a folder saved with "
                           "save_pretrained (or downloaded with `hf download`)")
        return
    if is_hub_id(model_id):
        return
    if model_id.startswith((".", "/", "~")) or is_file(local):
        out.add(where, f"model folder {model_id} does not exist (looked for {local}); fix the path, or use a hub id "
                       "such as stabilityai/stable-video-diffusion-img2vid-xt")
        return
    out.add(where, f"model '{model_id}' is neither a hub id (org/name), nor a built-in model "
                   f"({', '.join(BUILTIN_MODELS)}), nor an existing folder")


def _seeds(raw: Any, where: tuple, out: _Collector) -> tuple[int, ...] | range:
    """The seeds `raw` names (none when any of them is already reported); a sweep stays a range, and must end
    within MAX_SEED."""
    if out.broken(where):
        return ()
    if isinstance(raw, dict):
        start, count = raw.get("start", 0), raw.get("count")
        if out.broken(where + ("start",)) or out.broken(where + ("count",)) or not isinstance(start, int) \
                or not isinstance(count, int):
            return ()
        if start + count - 1 > MAX_SEED:
            out.add(where + ("count",), f"the sweep ends at seed {start + count - 1}, above the largest seed "
                                        f"{MAX_SEED} (2**63 - 1); lower start or count")
            return ()
        return range(start, start + count)
    if not isinstance(raw, list) or any(out.broken(where + (i,)) for i in range(len(raw))):
        return ()
    return tuple(raw)


def _settings_of(mapping: dict, path: tuple = (), out: _Collector | None = None) -> tuple[tuple[str, Any], ...]:
    """The settings `mapping` sets, leaving out any already reported (so that no later check reads a wrong value)."""
    return tuple((k, mapping[k]) for k in SETTING_NAMES
                 if k in mapping and (out is None or not out.broken(path + (k,))))


def _check_name(name: Any, where: tuple, out: _Collector, *, key: bool = False) -> bool:
    """Report `name` at `where` if it breaks the name rule; True when it is usable. A mapping key that is a bad name
    is reported under the mapping's path (the key itself may not be fit to spell a path)."""
    if not isinstance(name, str) or out.broken(where):
        return False
    reason = name_problem(name)
    if reason:
        out.add(where, f"{name!r} {reason}", key=key, shown=where[:-1] if key else None)
        return False
    return True


def _build_presets(data: dict, out: _Collector) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    folded: dict[str, str] = {}
    for name, spec in _mapping(data, "presets").items():
        path = ("presets", name)
        if not _check_name(name, path, out, key=True):
            continue
        if name.casefold() in folded:
            first = folded[name.casefold()]
            first_at = out.line_of(("presets", first), key=True)
            out.add(path, f"preset name '{name}' differs from '{first}' (at {first_at}) only in case; their output "
                          "folders would collide on a case-insensitive file system", key=True)
            continue
        folded[name.casefold()] = name
        if not isinstance(spec, dict) or out.broken(path):
            continue
        # Keys already reported are left out, so that the scheduler checks never read a wrong value.
        spec = {k: v for k, v in spec.items() if not out.broken(path + (k,))}
        for sub, message in scheduler_presets.check_preset(spec):
            # A refused key is reported at the key itself, not at its value.
            out.add(path + tuple(sub), message,
                    key=len(sub) == 1 and sub[0] in spec and sub[0] in scheduler_presets.REFUSED_OPTIONS)
        scheduler = scheduler_presets.canonical_name(spec.get("scheduler", "euler")) or "euler"
        sigmas = spec.get("sigmas")
        options = spec.get("scheduler_options")
        presets[name] = Preset(
            name=name,
            scheduler=scheduler,
            sigmas=tuple(sigmas) if isinstance(sigmas, list) else sigmas if isinstance(sigmas, str) else None,
            scheduler_options=tuple(sorted(options.items())) if isinstance(options, dict) else (),
            overrides=_settings_of(spec),
            description=spec["description"] if isinstance(spec.get("description"), str) else
            (scheduler_presets.PRESETS[scheduler].description if scheduler in scheduler_presets.PRESETS else ""),
            builtin=False,
        )
    return presets


def builtin_preset(name: str) -> Preset | None:
    """A built-in preset (by name or alias) as a `Preset`, or None."""
    canonical = scheduler_presets.canonical_name(name)
    if canonical is None:
        return None
    bp = scheduler_presets.PRESETS[canonical]
    return Preset(name=canonical, scheduler=canonical, sigmas=None, scheduler_options=(), overrides=(),
                  description=bp.description, builtin=True)


def _resolve_preset_ref(name: Any, path: tuple, presets: dict[str, Preset], out: _Collector) -> str | None:
    if not isinstance(name, str) or out.broken(path):
        return None
    if name in presets:
        return name
    builtin = builtin_preset(name)
    if builtin is not None:
        presets.setdefault(builtin.name, builtin)
        return builtin.name
    refused = scheduler_presets.refusal(name)
    if refused is not None:
        out.add(path, f"'{name}' is wrong for SVD: {refused.reason}; use '{refused.suggestion}' instead")
        return None
    known = list(presets) + list(scheduler_presets.PRESETS)
    out.add(path, f"unknown preset '{name}'{suggest(name, known)} (define it under `presets:` or use a built-in "
                  "one; `svdrender presets` lists them)")
    return None


def _resolve_preset_list(refs: Any, where: tuple, presets: dict[str, Preset], out: _Collector) -> tuple[str, ...]:
    """The presets one job list names, each resolved once; names of one preset (after case folding and aliases,
    e.g. euler, Euler, k_euler) are one error, since their jobs would render into one folder."""
    if not isinstance(refs, list) or out.broken(where):
        return ()
    resolved: dict[str, list[tuple[str, tuple, str]]] = {}
    for index, ref in enumerate(refs):
        name = _resolve_preset_ref(ref, where + (index,), presets, out)
        if name is not None:
            resolved.setdefault(name.casefold(), []).append((ref, where + (index,), name))
    names = []
    for group in resolved.values():
        names.append(group[0][2])
        if len(group) > 1:
            listed = ", ".join(f"'{ref}' (at {out.line_of(at)})" for ref, at, _ in group)
            out.add(group[1][1], f"{listed} name one preset, {group[0][2]}, {len(group)} times; list it once")
    return tuple(names)


def _item_files(raw: dict, path: tuple, base_dir: Path, out: _Collector,
                root: Path | None) -> list[tuple[str, str, tuple]]:
    """(name, path as written, where) for each image an item names: its image, or every file its glob matches."""
    if "image" in raw:
        image = raw["image"]
        if not isinstance(image, str) or out.broken(path + ("image",)):
            return []
        name = raw["name"] if isinstance(raw.get("name"), str) else Path(image).stem
        return [(name, image, path + ("image",))]
    pattern = raw.get("glob")
    if not isinstance(pattern, str) or out.broken(path + ("glob",)):
        return []
    try:
        matches = glob_files(base_dir, pattern, root)
    except GlobRefused as exc:
        out.add(path + ("glob",), str(exc))
        return []
    if not matches:
        out.add(path + ("glob",), f"glob {pattern!r} matches no files")
    prefix = f"{raw['name']}-" if isinstance(raw.get("name"), str) else ""
    return [(prefix + m.stem, str(m.relative_to(base_dir)) if m.is_relative_to(base_dir) else str(m),
             path + ("glob",)) for m in matches]


def _expand_items(data: dict, base_dir: Path, presets: dict[str, Preset], out: _Collector,
                  check_images: bool, root: Path | None, max_jobs: int) -> tuple[Item, ...]:
    defaults = _mapping(data, "defaults")
    # The defaults' presets are resolved (and reported) once, even when every item names its own.
    default_presets = _resolve_preset_list(defaults.get("presets", ["euler"]), ("defaults", "presets"), presets, out)
    default_seeds = _seeds(defaults.get("seeds", [0]), ("defaults", "seeds"), out)
    raw_items = data.get("items") if isinstance(data.get("items"), list) else []
    # First the size of the plan, by multiplication: a short recipe can ask for millions of jobs, and building them
    # (or decoding their images) would run out of memory before the count is seen.
    planned = []
    total = 0
    for index, raw in enumerate(raw_items):
        path = ("items", index)
        if not isinstance(raw, dict) or out.broken(path):
            continue
        own_presets = "presets" in raw
        preset_names = (_resolve_preset_list(raw["presets"], path + ("presets",), presets, out) if own_presets
                        else default_presets)
        seeds = _seeds(raw["seeds"], path + ("seeds",), out) if "seeds" in raw else default_seeds
        files = _item_files(raw, path, base_dir, out, root)
        total += len(files) * len(preset_names) * len(seeds)
        planned.append((path, raw, preset_names, seeds, files))
    if total > max_jobs:
        where = ("limits", "max_jobs") if "max_jobs" in _mapping(data, "limits") else ("items",)
        out.add(where, f"the recipe plans {total:,} jobs, more than limits.max_jobs ({max_jobs:,}); split the "
                       f"recipe, or raise limits.max_jobs (at most {_max_jobs_ceiling():,})")
        return ()
    items: list[Item] = []
    origin: dict[str, tuple[str, tuple]] = {}  # case-folded name → (name, where)
    decoded: dict[Path, str | None] = {}  # image → its error, or None when it decodes
    for path, raw, preset_names, seeds, files in planned:
        seeds = tuple(seeds)
        for name, rel, where in files:
            image = (base_dir / rel)
            refusal = _outside(rel, image, root)
            if refusal:
                out.add(where, refusal)
                continue
            named_at = path + ("name",) if "image" in raw and "name" in raw else where
            usable = not out.broken(named_at) and _item_name_usable(name, named_at, named_at == where, origin, out)
            if check_images:
                resolved_image = image.resolve()
                if resolved_image not in decoded:  # items often share an image: decode each file once
                    try:
                        images.check_image(image)
                        decoded[resolved_image] = None
                    except ImageError as exc:
                        # The location already names the recipe line; show the path as the user wrote it.
                        message = str(exc)
                        decoded[resolved_image] = (rel + message[len(str(image)):] if message.startswith(str(image))
                                                   else message)
                if decoded[resolved_image]:
                    out.add(where, decoded[resolved_image])
                    continue
            if not usable:
                continue
            items.append(Item(name=name, image=image.resolve(), image_display=rel, presets=preset_names,
                              seeds=seeds, overrides=_settings_of(raw, path, out), origin=path))
    return tuple(items)


def _item_name_usable(name: str, where: tuple, from_file: bool, origin: dict[str, tuple[str, tuple]],
                      out: _Collector) -> bool:
    """Check an item's name by the name rule and against the names before it (case-folded, as macOS compares
    them); record it in `origin` (case-folded name → (name, where)) and say whether it is usable."""
    reason = name_problem(name)
    if reason:
        out.add(where, f"item name {name!r} (from the file name) {reason}; add `name:`" if from_file
                else f"{name!r} {reason}")
        return False
    if name.casefold() in origin:
        first_name, first_at = origin[name.casefold()]
        same = ("is used twice" if first_name == name else
                f"differs from '{first_name}' only in case (their folders would collide on a case-insensitive file "
                "system)")
        fix = "rename one of the files" if from_file else "give one of them a different `name:`"
        out.add(where, f"item name '{name}' {same} (first at line {out.line_of(first_at).split(':')[0]}); {fix}")
        return False
    origin[name.casefold()] = (name, where)
    return True


def _max_jobs_ceiling() -> int:
    return schema()["properties"]["limits"]["properties"]["max_jobs"]["maximum"]


def _max_jobs(data: dict, out: _Collector) -> int:
    spec = schema()["properties"]["limits"]["properties"]["max_jobs"]
    value = _mapping(data, "limits").get("max_jobs", spec["default"])
    if not isinstance(value, int) or out.broken(("limits", "max_jobs")):
        return spec["default"]
    return value


def _output_dir(data: dict, path: Path, name: str, out: _Collector) -> Path:
    """The output folder; it must lie inside the recipe's repository, away from the recipe itself, unless the
    recipe sets allow_output_outside (the render deletes its own temporaries there and writes manifests)."""
    base_dir = path.resolve().parent
    output = _mapping(data, "output")
    written = output.get("dir") if isinstance(output.get("dir"), str) else None
    out_dir = (base_dir / (written or f"renders/{name}")).resolve()
    if written is None or out.broken(("output", "dir")) or data.get("allow_output_outside") is True:
        return out_dir
    root = repository_root(path).resolve()
    if not out_dir.is_relative_to(root):
        out.add(("output", "dir"), f"{written} resolves to {out_dir}, outside the recipe's repository {root}; write "
                                   "inside it, or set `allow_output_outside: true` at the top of the recipe")
    elif base_dir.is_relative_to(out_dir):
        out.add(("output", "dir"), f"{written} resolves to {out_dir}, which holds the recipe itself; use a "
                                   "folder of its own, such as renders/<name>")
    return out_dir


def resolve_settings(recipe: Recipe, preset: Preset, item: Item) -> Settings:
    """Built-in defaults < the model's defaults < built-in preset step count < recipe defaults < user preset < item."""
    values = dict(setting_defaults())
    values.update(recipe.model_defaults.values)
    builtin = scheduler_presets.PRESETS.get(preset.scheduler)
    if builtin is not None and builtin.default_steps:
        values["num_inference_steps"] = builtin.default_steps
    values.update(recipe.defaults)
    values.update(preset.overrides)
    values.update(item.overrides)
    if values["output_fps"] is None:  # the schema's default: the files play at the rate the model was told
        values["output_fps"] = values["fps"]
    return Settings(**values)


def combination_problems(recipe: Recipe, preset: Preset, item: Item) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with item × preset's resolved settings that no single value shows (the step range of the
    preset's scheduler, loops and frame rates, segments, the guidance order), each with the names of the settings
    at fault, most likely first."""
    problems = []
    s = resolve_settings(recipe, preset, item)
    steps = s.num_inference_steps
    message = (scheduler_presets.step_range_problem(preset.scheduler, steps)
               if isinstance(steps, int) and not isinstance(steps, bool) else None)
    if message:
        problems.append((("num_inference_steps",), message))
    if (problem := _motion_problem(s, f"{item.name}/{preset.name}")) is not None:
        problems.append(problem)
    if all(_strict_integer(None, v) for v in (s.segments, s.num_frames)) and s.segments > 1 and s.num_frames < 2:
        problems.append((("segments", "num_frames"),
                         f"segments {s.segments} needs num_frames of at least 2 for {item.name}/{preset.name}: a "
                         f"segment after the first adds num_frames - 1 frames"))
    if all(isinstance(v, (int, float)) for v in (s.min_guidance_scale, s.max_guidance_scale)) \
            and s.min_guidance_scale > s.max_guidance_scale:
        problems.append((("min_guidance_scale", "max_guidance_scale"),
                         f"min_guidance_scale {s.min_guidance_scale} is above max_guidance_scale "
                         f"{s.max_guidance_scale} for {item.name}/{preset.name}"))
    return problems


def setting_sources(recipe: Recipe, preset: Preset, item: Item) -> tuple[tuple[str, str], ...]:
    """Where an item × preset's value of each model setting came from: a recipe line, the model, or svdrender."""
    model_sources = dict(recipe.model_defaults.sources)
    sources = []
    for name in MODEL_SETTINGS:
        where = _origin_of((name,), recipe, preset, item)
        if where[-1:] == (name,):
            sources.append((name, recipe.setting_origins.get(where, "recipe")))
        else:
            sources.append((name, model_sources.get(name, SVDRENDER_DEFAULT)))
    return tuple(sources)


def _model_warnings(recipe: Recipe, preset: Preset, item: Item, s: Settings, model_at: tuple | None, warned: set,
                    out: _Collector) -> None:
    """Warn, at the recipe value, about settings that render but not as the model was trained: conditioning its
    model card says it was fine-tuned with fixed, more frames than it was trained for; and, at the model (`model_at`,
    None for --model), a frame count that is only svdrender's guess."""
    defaults = recipe.model_defaults
    for name, fixed in defaults.fixed:
        value = getattr(s, name)
        where = _origin_of((name,), recipe, preset, item)
        if value == fixed or not isinstance(value, int) or where in warned:
            continue
        warned.add(where)
        seen = f" (the model sees fps - 1 = {fixed - 1}, its card's \"{fixed - 1} FPS\")" if name == "fps" else ""
        out.warn(where, f"{defaults.family} was fine-tuned with {name} fixed at {fixed}{seen}; {value} renders, but "
                        f"was not trained for: expect less consistent videos, or leave {name} out")
    trained = defaults.trained_frames
    frames = s.num_frames
    where = _origin_of(("num_frames",), recipe, preset, item)
    if where in warned:
        return
    if where[-1:] == ("num_frames",) and trained is not None and isinstance(frames, int) and frames > trained:
        warned.add(where)
        out.warn(where, f"num_frames {frames} is more than the {trained} frames the model was trained for "
                        f"({dict(defaults.sources)['num_frames']}); frames past {trained} usually degrade: leave "
                        f"num_frames out to render {trained}")
    elif where[-1:] != ("num_frames",) and trained is None and defaults.uncached and "guess" not in warned:
        # The first render downloads the config; if its frame count differs, the next plan renders these jobs again.
        warned.add("guess")
        model = recipe.model.id
        out.warn(model_at, f"{'model' if model_at else '--model'} {model} is not in the local Hugging Face cache and "
                           f"svdrender does not know its family, so num_frames is svdrender's default, {frames}; once "
                           "a render has downloaded it, its unet/config.json decides, and jobs whose frame count then "
                           f"differs render again: set num_frames, or `hf download {model}` first")


def _semantic_checks(recipe: Recipe, model_at: tuple | None, out: _Collector) -> None:
    """Checks on resolved combinations that no single value shows (step ranges, guidance order, segments that would
    add no frames, loops and output frame rates), each reported once where it was set; and the warnings about the
    model's trained settings."""
    reported = set()
    warned = set()
    for item in recipe.items:
        for preset_name in item.presets:
            preset = recipe.presets[preset_name]
            _model_warnings(recipe, preset, item, resolve_settings(recipe, preset, item), model_at, warned, out)
            for keys, message in combination_problems(recipe, preset, item):
                if (where := _origin_of(keys, recipe, preset, item)) not in reported:
                    reported.add(where)
                    out.add(where, message)


def _motion_problem(s: Settings, job: str) -> tuple[tuple[str, ...], str] | None:
    """What is wrong with a job's loop and output frame rate (the settings to blame, most likely first, and why)."""
    m = s.motion
    if m.interpolation != "none" and m.output_fps < m.fps:
        return (("output_fps", "interpolation", "fps"),
                f"output_fps {m.output_fps} is below fps {m.fps} for {job}: interpolation '{m.interpolation}' only "
                "adds frames; raise output_fps, or set interpolation: none to play the frames slower")
    if m.interpolation != "none" and m.output_fps == m.fps:
        return (("interpolation", "output_fps", "fps"),
                f"interpolation '{m.interpolation}' has nothing to do for {job}: output_fps is {m.output_fps}, the "
                "same as fps; set output_fps above fps (e.g. 24), or leave interpolation out")
    frames = s.frame_count  # the loop runs over the whole video, every segment of it
    if m.loop == "crossfade" and 2 * m.crossfade_frames > frames:
        fix = (f"lower crossfade_frames to at most {frames // 2}" if frames >= 2 else
               "a crossfade needs at least 2 frames")
        has = (f"num_frames of at least {2 * m.crossfade_frames}, but {job} has {frames}" if s.segments == 1 else
               f"a video of at least {2 * m.crossfade_frames} frames, but {job} makes {frames} "
               f"({s.segments} segments of {s.num_frames})")
        return (("crossfade_frames", "loop", "num_frames"),
                f"crossfade_frames {m.crossfade_frames} blends that many frames from each end, so it needs {has}; "
                f"{fix}")
    count = m.frame_count(s.frame_count)
    if count > motion.MAX_OUTPUT_FRAMES:
        how = ([f"loop {m.loop}"] if m.loop != "none" else []) + (
            [f"interpolation {m.interpolation} to {m.output_fps} fps"] if m.interpolates else [])
        return (("output_fps", "loop", "num_frames", "interpolation"),
                f"{job} would write {count:,} frames ({s.frame_count} from the model, {', '.join(how)}), more than "
                f"the {motion.MAX_OUTPUT_FRAMES:,} a job may write; lower output_fps or num_frames")
    return None


def _origin_of(keys: tuple[str, ...], recipe: Recipe, preset: Preset, item: Item) -> tuple:
    """The most specific place (item, preset, defaults) that set one of `keys`."""
    for level, path in ((dict(item.overrides), item.origin),
                        ({} if preset.builtin else dict(preset.overrides), ("presets", preset.name)),
                        (dict(recipe.defaults), ("defaults",))):
        for key in keys:
            if key in level:
                return path + (key,)
    return item.origin


def load_recipe(path: Path | str, *, model_override: str | None = None, out_override: Path | None = None,
                check_images: bool = True) -> Recipe:
    """Load, validate and freeze a recipe file; raise RecipeError listing every problem.

    One pass: the schema and every semantic check run together, each check skipping only the values already
    reported, so that fixing one mistake never reveals another that was there all along."""
    path = Path(path)
    doc = load(path, _display(path), keep_going=True)
    if not isinstance(doc.data, dict):
        raise RecipeError(doc.problems or [Problem(doc.file, 1, 1, "$", f"a recipe must be a mapping of keys, got "
                                                                        f"{_type_name(doc.data)}")])
    out = _Collector()
    out.main = doc
    out.take(doc)
    base_dir = path.resolve().parent
    root = None if doc.data.get("allow_inputs_outside") is True else repository_root(path)
    data = _merge_includes(doc, base_dir, out, 0, (path.resolve(),), root)
    _schema_problems(data, out)
    presets = _build_presets(data, out)
    items = _expand_items(data, base_dir, presets, out, check_images, root, _max_jobs(data, out))
    written_name = data.get("name")
    if written_name is not None and _check_name(written_name, ("name",), out):
        name = written_name
    else:
        name = path.stem if name_problem(path.stem) is None else "recipe"
    out_dir = out_override or _output_dir(data, path, name, out)
    _check_model(data, base_dir, out)
    model = _model_spec(data.get("model"))
    if model_override:
        model = ModelSpec(id=model_override)
    # A model already refused names nothing to read (an empty id would read the recipe's own folder).
    known_model = model_override or not (out.broken(("model",)) or out.broken(("model", "id")) or not model.id)
    defaults_of_model = model_defaults(model, base_dir) if known_model else ModelDefaults()
    defaults = _settings_of(_mapping(data, "defaults"), ("defaults",), out)
    output = _mapping(data, "output")
    formats = output.get("formats") if isinstance(output.get("formats"), list) else ["mp4"]
    files = (path.resolve(),) + tuple(sorted({d.file for d in out.owners.values()}))
    recipe = Recipe(
        path=path.resolve(),
        name=name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        model=model,
        output_dir=Path(out_dir).resolve(),
        formats=tuple(formats),
        defaults=defaults,
        presets=presets,
        items=items,
        files=tuple(Path(f) for f in files),
        performance=PerformanceRequest(**_mapping(data, "performance")),
        model_defaults=defaults_of_model,
        setting_origins=_setting_origins(defaults, presets, items, out),
    )
    model_at = None if model_override else ("model", "id") if isinstance(data.get("model"), dict) else ("model",)
    _semantic_checks(recipe, model_at, out)
    if out.problems:
        raise RecipeError(out.problems)
    warnings = sorted(out.warnings, key=lambda p: (p.file, p.line or 0, p.col or 0, p.path))
    return replace(recipe, warnings=defaults_of_model.warnings + tuple(warnings))


def _setting_origins(defaults: tuple, presets: dict[str, Preset], items: tuple[Item, ...],
                     out: _Collector) -> dict[tuple, str]:
    """JSON path → "recipe line N" (or "<included file> line N") of every model setting the recipe sets."""
    paths = [("defaults", k) for k, _ in defaults]
    paths += [("presets", p.name, k) for p in presets.values() if not p.builtin for k, _ in p.overrides]
    paths += [item.origin + (k,) for item in items for k, _ in item.overrides]
    origins = {}
    for path in paths:
        if path[-1] in MODEL_SETTINGS:
            doc = out.doc_for(path)
            loc = doc.locate(path)
            origins[path] = f"{'recipe' if doc is out.main else doc.file} line {loc.line if loc else '?'}"
    return origins
