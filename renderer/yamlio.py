"""Safe YAML loading that keeps the file, line and column of every value.

PyYAML's composer gives nodes with marks; we build plain Python values from those nodes ourselves so that we can
(a) remember where each value came from, (b) reject duplicate keys naming both lines, (c) bound alias expansion
(billion-laughs documents compose cheaply but explode when constructed), (d) allow only the standard YAML tags,
(e) bound nesting before PyYAML's recursive composer sees it (deep documents would end in RecursionError), and
(f) refuse values no recipe means and no JSON reader accepts: NUL characters, NaN and infinities, integers beyond
64 bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, RecipeError
from .paths import Unreadable, read_bounded

MAX_FILE_BYTES = 1024 * 1024  # recipes are small; a bigger file is a mistake or an attack
MAX_VALUES = 200_000  # values after alias expansion
MAX_DEPTH = 64
# Integers must fit a signed 64-bit integer: torch seeds, JSON readers of the manifests (int64 columns, JavaScript's
# safe range aside) and every setting stay within it; a longer digit string is a mistake, not a value.
MAX_INT = 2**63 - 1

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
# YAML 1.1 reads these unquoted words as booleans; users rarely mean that, so validation explains it.
YAML11_BOOLEAN_WORDS = {"y", "yes", "n", "no", "on", "off", "true", "false"}


@dataclass(frozen=True)
class Location:
    """Where a value was written."""

    file: str
    line: int
    col: int


@dataclass
class Document:
    """A loaded YAML document: plain data plus where each value (and each mapping key) was written."""

    file: str
    data: Any
    values: dict[tuple, Location] = field(default_factory=dict)
    keys: dict[tuple, Location] = field(default_factory=dict)
    # Scalars as written, for values YAML 1.1 turns into something surprising (`no` → False, `1e3` → "1e3").
    raw: dict[tuple, str] = field(default_factory=dict)
    # Values refused while loading (NUL, NaN, huge integers, foreign tags, duplicate keys): reported by `load`
    # unless the caller keeps going, in which case checks of these paths are skipped (the value is already wrong).
    problems: list[Problem] = field(default_factory=list)
    broken: set[tuple] = field(default_factory=set)

    def locate(self, path: tuple, *, key: bool = False) -> Location | None:
        """The location of `path`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        if key and path in table:
            return table[path]
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


def json_path(path: tuple) -> str:
    """`("presets", "fast", "sigmas", 2)` → `$.presets.fast.sigmas[2]`."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum() and part[:1].isalpha():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def _problem(file: str, mark, message: str, path: tuple = ()) -> Problem:
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return Problem(file, line, col, json_path(path) if path else "", message)


class _Builder:
    """Turns a composed node graph into plain data while recording positions."""

    def __init__(self, file: str, doc: Document):
        self.file = file
        self.doc = doc
        self.count = 0
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node, path: tuple, depth: int = 0):
        self.count += 1
        if self.count > MAX_VALUES:
            raise RecipeError(
                [_problem(self.file, node.start_mark, f"YAML aliases expand to more than {MAX_VALUES:,} values; "
                          "refusing to expand further (alias bomb?)")]
            )
        if depth > MAX_DEPTH:
            raise RecipeError([_problem(self.file, node.start_mark, f"nesting deeper than {MAX_DEPTH} levels "
                                        "(a recursive alias?)")])
        self.doc.values.setdefault(path, Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self._bad_tag(node, path)
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self._bad_tag(node, path)
            return self._mapping(node, path, depth)
        raise AssertionError(f"unknown YAML node {node!r}")

    def _refuse(self, node, path, message):
        self.problems.append(_problem(self.file, node.start_mark, message, path))
        self.doc.broken.add(path)

    def _bad_tag(self, node, path):
        self._refuse(node, path, f"YAML tag {node.tag} is not allowed; recipes use plain YAML values only")

    def _scalar(self, node, path):
        if node.tag not in _SCALAR_TAGS:
            self._bad_tag(node, path)
            return node.value
        if "\x00" in node.value:
            self._refuse(node, path, "contains a NUL character (\\0), which no file name or setting can hold")
            return None
        try:
            value = self._constructor.yaml_constructors[node.tag](self._constructor, node)
        except (ValueError, OverflowError):  # e.g. an integer of more than 4,300 digits
            self._refuse(node, path, f"{_shorten(node.value)} is not a number svdrender can read")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._refuse(node, path, f"{node.value} is not a finite number; recipes hold no NaN or infinity")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            self._refuse(node, path, f"{_shorten(node.value)} is too large: integers are at most 2**63 - 1 "
                                     f"({MAX_INT})")
            return None
        if node.style is None and (node.tag == "tag:yaml.org,2002:bool" or
                                   (node.tag == "tag:yaml.org,2002:str" and _looks_numeric(node.value))):
            self.doc.raw[path] = node.value
        return value

    def _mapping(self, node, path, depth):
        result: dict = {}
        seen: dict = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self.problems.append(_problem(self.file, source.start_mark,
                                                      "'<<' merges mappings only", path))
                        continue
                    for k, v in self._mapping(source, path, depth + 1).items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(_problem(self.file, key_node.start_mark, "mapping keys must be plain strings",
                                              path))
                continue
            key = key_node.value
            if "\x00" in key:
                self._refuse(key_node, path, "a key contains a NUL character (\\0)")
                continue
            if key in seen:
                first = seen[key]
                self.problems.append(_problem(
                    self.file, key_node.start_mark,
                    f"duplicate key '{key}' (first defined at line {first.line + 1}); remove one of them",
                    path + (key,)))
                continue
            seen[key] = key_node.start_mark
            self.doc.keys[path + (key,)] = Location(self.file, key_node.start_mark.line + 1,
                                                    key_node.start_mark.column + 1)
            result[key] = self.build(value_node, path + (key,), depth + 1)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _nesting_problem(text: str, file: str) -> Problem | None:
    """A located problem when collections nest deeper than MAX_DEPTH, found from the parser's event stream (a
    state machine, unlike PyYAML's recursive composer), or None."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH + 1:  # the document's own mapping is level 0
                return _problem(file, event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class NotUtf8(ValueError):
    """Bytes that are not UTF-8 text, and the line and column (1-based) of the first bad byte."""

    def __init__(self, line: int, col: int):
        super().__init__(line, col)
        self.line, self.col = line, col


def utf8_text(raw: bytes) -> str:
    """`raw` decoded as UTF-8 (a byte-order mark, as some Windows editors write, is dropped), or NotUtf8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NotUtf8(line, exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1) from None


def load(path: Path, display: str | None = None, *, keep_going: bool = False) -> Document:
    """Load one YAML file safely; raise RecipeError with file:line:col problems on any failure.

    With `keep_going`, refused values (see `Document.problems`) do not raise: the caller reports them together
    with its own checks."""
    file = display or str(path)
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise RecipeError([Problem(file, None, None, "", "no such file")]) from None
    except Unreadable as exc:
        message = {"folder": "is a directory, not a recipe file", "special": "is not a regular file",
                   "too large": (f"is {exc.size:,} bytes" if exc.size is not None else f"is more than "
                                 f"{MAX_FILE_BYTES:,} bytes") + f"; recipes are limited to {MAX_FILE_BYTES:,} bytes",
                   }.get(exc.kind, f"cannot be read: {exc.detail}")
        raise RecipeError([Problem(file, None, None, "", message)]) from None
    try:
        text = utf8_text(raw)
    except NotUtf8 as exc:
        raise RecipeError([Problem(file, exc.line, exc.col, "", "is not UTF-8 text; save the recipe as UTF-8")]
                          ) from None
    return loads(text, file, keep_going=keep_going)


def loads(text: str, file: str, *, keep_going: bool = False) -> Document:
    """Parse YAML text; see `load`."""
    doc = Document(file=file, data=None)
    try:
        deep = _nesting_problem(text, file)
        if deep is not None:
            raise RecipeError([deep])
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise RecipeError([_problem(file, mark, f"YAML syntax error: {message}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([Problem(file, None, None, "", f"YAML error: {exc}")]) from None
    if not nodes or nodes[0] is None:
        raise RecipeError([Problem(file, None, None, "", "is empty; a recipe needs at least `version: 1` and `items`")])
    if len(nodes) > 1:
        raise RecipeError([_problem(file, nodes[1].start_mark, "holds several YAML documents; a recipe is one")])
    builder = _Builder(file, doc)
    doc.data = builder.build(nodes[0], ())
    doc.problems = builder.problems
    if builder.problems and not keep_going:
        raise RecipeError(builder.problems)
    return doc
