"""Recipe files → a validated, frozen `Recipe`: JSON Schema first, then the checks a schema cannot express.

Every problem in a recipe (and in the files it includes) is collected and reported at once, each located at
file:line:col with its JSON path. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import glob as globlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from . import images, schedulers
from .errors import ImageError, Problem, RecipeError
from .paths import is_inside, repository_root
from .yamlio import YAML11_BOOLEAN_WORDS, Document, json_path, load

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "recipe.schema.json"
MAX_INCLUDE_DEPTH = 8
BUILTIN_TINY = "builtin:tiny"
BUILTIN_SVD_XT_RANDOM = "builtin:svd-xt-random"  # full-size architecture, random weights: GPU benchmarks
BUILTIN_MODELS = (BUILTIN_TINY, BUILTIN_SVD_XT_RANDOM)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
    """Every resolved SVD setting of one job."""

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

    def scheduler_spec(self, num_inference_steps: int) -> dict:
        """The mapping `schedulers.build` takes for this preset at a given step count."""
        spec: dict[str, Any] = {"scheduler": self.scheduler, "num_inference_steps": num_inference_steps}
        if self.sigmas is not None:
            spec["sigmas"] = list(self.sigmas) if isinstance(self.sigmas, tuple) else self.sigmas
        if self.scheduler_options:
            spec["scheduler_options"] = dict(self.scheduler_options)
        return spec


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
    performance: tuple[tuple[str, Any], ...] = ()  # the recipe's `performance:` section, as written


class _Collector:
    """Accumulates problems, locating each JSON path in the document that holds it."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.owners: dict[tuple, Document] = {}
        self.main: Document | None = None

    def doc_for(self, path: tuple) -> Document:
        probe = path
        while probe:
            if probe in self.owners:
                return self.owners[probe]
            probe = probe[:-1]
        return self.main

    def add(self, path: tuple, message: str, *, key: bool = False) -> None:
        doc = self.doc_for(path)
        loc = doc.locate(path, key=key)
        self.problems.append(Problem(doc.file, loc.line if loc else None, loc.col if loc else None,
                                     json_path(path), message))


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
        if not target.is_file():
            out.add(("include", index), f"included file {rel} does not exist")
            continue
        try:
            sub = load(target, _display(target))
        except RecipeError as exc:
            out.problems.extend(exc.problems)
            continue
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
    if isinstance(value, bool) and raw.lower() in YAML11_BOOLEAN_WORDS:
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
    validator = jsonschema.Draft202012Validator(schema())
    for error in validator.iter_errors(data):
        _report_schema_error(error, out)


def _report_schema_error(error, out: _Collector) -> None:
    path = tuple(error.absolute_path)
    validator = error.validator
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
            _report_schema_error(best, out)
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
            reason = schedulers.REFUSED_OPTIONS.get(key)
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
    if validator == "pattern":
        out.add(path, f"{value!r} is not a safe name: use letters, digits, '.', '_' and '-', starting with a "
                      "letter or digit (at most 64 characters)")
        return
    if validator == "propertyNames":
        out.add(path, f"{error.instance!r} is not a safe name: use letters, digits, '.', '_' and '-'")
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


def _model_spec(raw: Any) -> ModelSpec:
    if raw is None:
        return ModelSpec(id=schema()["properties"]["model"]["default"])
    if isinstance(raw, str):
        return ModelSpec(id=raw)
    return ModelSpec(id=raw["id"], revision=raw.get("revision", "main"), variant=raw.get("variant"),
                     dtype=raw.get("dtype", "auto"))


def _expand_seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, dict):
        start = raw.get("start", 0)
        return tuple(range(start, start + raw["count"]))
    return tuple(raw)


def _settings_of(mapping: dict) -> tuple[tuple[str, Any], ...]:
    return tuple((k, mapping[k]) for k in SETTING_NAMES if k in mapping)


def _build_presets(data: dict, out: _Collector) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for name, spec in (data.get("presets") or {}).items():
        if not isinstance(spec, dict):
            continue
        for sub, message in schedulers.check_preset(spec):
            # A refused key is reported at the key itself, not at its value.
            out.add(("presets", name) + tuple(sub), message,
                    key=len(sub) == 1 and sub[0] in spec and sub[0] in schedulers.REFUSED_OPTIONS)
        scheduler = schedulers.canonical_name(spec.get("scheduler", "euler")) or "euler"
        sigmas = spec.get("sigmas")
        presets[name] = Preset(
            name=name,
            scheduler=scheduler,
            sigmas=tuple(sigmas) if isinstance(sigmas, list) else sigmas,
            scheduler_options=tuple(sorted((spec.get("scheduler_options") or {}).items())),
            overrides=_settings_of(spec),
            description=spec.get("description", schedulers.PRESETS[scheduler].description
                                  if scheduler in schedulers.PRESETS else ""),
            builtin=False,
        )
    return presets


def builtin_preset(name: str) -> Preset | None:
    """A built-in preset (by name or alias) as a `Preset`, or None."""
    canonical = schedulers.canonical_name(name)
    if canonical is None:
        return None
    bp = schedulers.PRESETS[canonical]
    return Preset(name=canonical, scheduler=canonical, sigmas=None, scheduler_options=(), overrides=(),
                  description=bp.description, builtin=True)


def _resolve_preset_ref(name: Any, path: tuple, presets: dict[str, Preset], out: _Collector) -> str | None:
    if not isinstance(name, str):
        return None
    if name in presets:
        return name
    builtin = builtin_preset(name)
    if builtin is not None:
        presets.setdefault(builtin.name, builtin)
        return builtin.name
    refused = schedulers.refusal(name)
    if refused is not None:
        out.add(path, f"'{name}' is wrong for SVD: {refused.reason}; use '{refused.suggestion}' instead")
        return None
    known = list(presets) + list(schedulers.PRESETS)
    out.add(path, f"unknown preset '{name}'{suggest(name, known)} (define it under `presets:` or use a built-in "
                  "one; `svdrender presets` lists them)")
    return None


def _expand_items(data: dict, base_dir: Path, presets: dict[str, Preset], out: _Collector,
                  check_images: bool, root: Path | None) -> tuple[Item, ...]:
    defaults = data.get("defaults") or {}
    default_presets = defaults.get("presets", ["euler"])
    default_seeds = defaults.get("seeds", [0])
    items: list[Item] = []
    origin: dict[str, tuple] = {}
    decoded: dict[Path, str | None] = {}  # image → its error, or None when it decodes
    for index, raw in enumerate(data.get("items") or []):
        if not isinstance(raw, dict):
            continue
        path = ("items", index)
        if "presets" in raw:
            preset_refs = [(p, path + ("presets", i)) for i, p in enumerate(raw["presets"])]
        else:
            owner = ("defaults", "presets") if "presets" in defaults else path
            preset_refs = [(p, owner + ((i,) if owner != path else ())) for i, p in enumerate(default_presets)]
        resolved = [_resolve_preset_ref(p, where, presets, out) for p, where in preset_refs]
        seeds = _expand_seeds(raw.get("seeds", default_seeds))
        if "image" in raw:
            files = [(raw.get("name") or Path(raw["image"]).stem, raw["image"], path + ("image",))]
        else:
            pattern = raw["glob"]
            matches = sorted(globlib.glob(str(base_dir / pattern), recursive=True))
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                out.add(path + ("glob",), f"glob {pattern!r} matches no files")
            prefix = f"{raw['name']}-" if raw.get("name") else ""
            files = [(prefix + Path(m).stem, str(Path(m).relative_to(base_dir)) if Path(m).is_relative_to(base_dir)
                      else m, path + ("glob",)) for m in matches]
        for name, rel, where in files:
            image = (base_dir / rel)
            refusal = _outside(rel, image, root)
            if refusal:
                out.add(where, refusal)
                continue
            if not _SAFE_NAME.match(name):
                out.add(where, f"item name {name!r} (from the file name) is not a safe name; add `name:` with "
                               "letters, digits, '.', '_' and '-'")
                continue
            named_at = path + ("name",) if "image" in raw and "name" in raw else where
            if name in origin:
                first = out.doc_for(origin[name]).locate(origin[name])
                out.add(named_at, f"item name '{name}' is used twice (first at line {first.line if first else '?'}); "
                                  "give one of them a different `name:`")
                continue
            origin[name] = named_at
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
            items.append(Item(name=name, image=image.resolve(), image_display=rel,
                              presets=tuple(p for p in resolved if p is not None), seeds=seeds,
                              overrides=_settings_of(raw), origin=path))
    return tuple(items)


def resolve_settings(recipe: Recipe, preset: Preset, item: Item) -> Settings:
    """Built-in defaults < built-in preset step count < recipe defaults < user preset < item."""
    values = dict(setting_defaults())
    builtin = schedulers.PRESETS.get(preset.scheduler)
    if builtin is not None and builtin.default_steps:
        values["num_inference_steps"] = builtin.default_steps
    values.update(recipe.defaults)
    values.update(preset.overrides)
    values.update(item.overrides)
    return Settings(**values)


def _semantic_checks(recipe: Recipe, out: _Collector) -> None:
    """Checks on resolved combinations that no single value shows: guidance order."""
    reported = set()
    for item in recipe.items:
        for preset_name in item.presets:
            preset = recipe.presets[preset_name]
            s = resolve_settings(recipe, preset, item)
            message = schedulers.step_range_problem(preset.scheduler, s.num_inference_steps)
            if message and (where := _origin_of(("num_inference_steps",), recipe, preset, item)) not in reported:
                reported.add(where)
                out.add(where, message)
            if s.min_guidance_scale > s.max_guidance_scale:
                where = _origin_of(("min_guidance_scale", "max_guidance_scale"), recipe, preset, item)
                if where not in reported:
                    reported.add(where)
                    out.add(where, f"min_guidance_scale {s.min_guidance_scale} is above max_guidance_scale "
                                   f"{s.max_guidance_scale} for {item.name}/{preset.name}")


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
    """Load, validate and freeze a recipe file; raise RecipeError listing every problem."""
    path = Path(path)
    doc = load(path, _display(path))
    if not isinstance(doc.data, dict):
        raise RecipeError([Problem(doc.file, 1, 1, "$", f"a recipe must be a mapping of keys, got "
                                                         f"{_type_name(doc.data)}")])
    out = _Collector()
    out.main = doc
    base_dir = path.resolve().parent
    root = None if doc.data.get("allow_inputs_outside") is True else repository_root(path)
    data = _merge_includes(doc, base_dir, out, 0, (path.resolve(),), root)
    _schema_problems(data, out)
    if out.problems:
        raise RecipeError(out.problems)
    presets = _build_presets(data, out)
    items = _expand_items(data, base_dir, presets, out, check_images, root)
    name = data.get("name") or (path.stem if _SAFE_NAME.match(path.stem) else "recipe")
    output = data.get("output") or {}
    out_dir = out_override or (base_dir / output.get("dir", f"renders/{name}"))
    model = _model_spec(data.get("model"))
    if model.is_builtin and model.id not in BUILTIN_MODELS:
        where = ("model", "id") if isinstance(data.get("model"), dict) else ("model",)
        out.add(where, f"unknown built-in model '{model.id}'{suggest(model.id, BUILTIN_MODELS)}; built-in models "
                       f"are {', '.join(BUILTIN_MODELS)}")
    if model_override:
        model = ModelSpec(id=model_override)
    defaults = {k: v for k, v in (data.get("defaults") or {}).items() if k in SETTING_NAMES}
    files = (path.resolve(),) + tuple(sorted({d.file for d in out.owners.values()}))
    recipe = Recipe(
        path=path.resolve(),
        name=name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        model=model,
        output_dir=Path(out_dir).resolve(),
        formats=tuple(output.get("formats", ["mp4"])),
        defaults=tuple(defaults.items()),
        presets=presets,
        items=items,
        files=tuple(Path(f) for f in files),
        performance=tuple(sorted((data.get("performance") or {}).items())),
    )
    _semantic_checks(recipe, out)
    if out.problems:
        raise RecipeError(out.problems)
    return recipe
