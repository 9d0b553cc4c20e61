"""Where a recipe may read and svdrender may write: inputs inside the recipe's repository, outputs inside the output
folder. Both checks resolve `..` and symlinks, so neither a path nor a symlinked folder can lead elsewhere. Also the
one rule for names that become path segments, the bounded glob walk, and bounded reads of small files."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from pathlib import Path

from .errors import JobError
from .layout import RESERVED_NAMES, TMP_MARKER


def repository_root(recipe: Path) -> Path:
    """The git work tree holding `recipe` (the nearest folder with a `.git`), or the recipe's folder outside git."""
    folder = Path(recipe).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def local_model_path(model_id: str, base_dir: Path) -> Path:
    """Where a model id would be as a local folder: `~` expanded, relative to the recipe's folder. (Whether it is
    one is the caller's question: a hub id names no folder here.)"""
    try:
        local = Path(model_id).expanduser()
    except RuntimeError:  # `~someone` with no such user
        local = Path(model_id)
    return local if local.is_absolute() else base_dir / local


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every `..` and symlink resolved, lies in `root` (also resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file (following symlinks); False for a name the OS refuses (too long, ...)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """Whether `path` is a folder (following symlinks); False for a name the OS refuses (too long, ...)."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def check_output_path(root: Path, path: Path) -> Path:
    """Return `path` if writing it stays inside output folder `root`; raise JobError before anything is written."""
    if not is_inside(root, path):
        raise JobError(f"refusing to write {path}: it resolves to {Path(path).resolve()}, outside the output folder "
                       f"{Path(root).resolve()} (a symlinked subfolder?)")
    return path


# --- names --------------------------------------------------------------------------------------------------------

# \A...\Z, not ^...$: `$` also matches before a trailing newline, which let `coffee\n` through as a folder name.
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Device names Windows will not give a file, with or without an extension (`con.mp4` is CON too).
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                              *(f"lpt{i}" for i in range(1, 10))})
_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED_NAMES)
UNSAFE_NAME = ("is not a safe name: use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 64 "
               "characters)")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an item or preset folder (the one rule for every name svdrender turns into a path
    segment), or None when it can. The reason reads after the quoted name: f"{name!r} {reason}"."""
    if not isinstance(name, str) or not _NAME.match(name):
        return UNSAFE_NAME
    if TMP_MARKER in name:
        return (f"contains '{TMP_MARKER}', the mark of svdrender's temporary files (the end-of-run sweep would delete "
                "its outputs); choose another name")
    if name.casefold() in _RESERVED_FOLDED:
        return "is the name of a file svdrender writes into the output folder; choose another name"
    if name.split(".", 1)[0].casefold() in _WINDOWS_DEVICES:
        return "is a device name on Windows, which no file there can take; choose another name"
    if name.endswith("."):
        return "ends with '.', which Windows drops from file names; choose another name"
    return None


# --- globs --------------------------------------------------------------------------------------------------------

MAX_GLOB_ENTRIES = 100_000  # folder entries one glob may look at; a recipe's inputs are far fewer
MAX_GLOB_SECONDS = 10.0
_MAGIC = re.compile(r"[*?[]")


class GlobRefused(ValueError):
    """A glob that is not walked (absolute, leaving the repository) or whose walk went past its bounds."""


def glob_files(base_dir: Path, pattern: str, root: Path | None, *, max_entries: int = MAX_GLOB_ENTRIES,
               max_seconds: float = MAX_GLOB_SECONDS) -> list[Path]:
    """Files matching `pattern` (relative to `base_dir`; `**` spans folders), sorted.

    Refused before any walk: an absolute pattern, a `..` after a wildcard, and a fixed start that resolves outside
    `root` (None allows both). The walk never enters a symlinked folder (so two links to `.` cannot loop), skips
    hidden names unless the pattern spells the dot, and stops with GlobRefused past `max_entries` or `max_seconds`.
    """
    parts = [p for p in pattern.replace("\\", "/").split("/")]
    absolute = pattern.startswith("/")
    if absolute and root is not None:
        raise GlobRefused(f"glob {pattern!r} is absolute; write it relative to the recipe's folder, or set "
                          "`allow_inputs_outside: true` at the top of the recipe")
    parts = [p for p in parts if p not in ("", ".")]
    fixed = 0
    while fixed < len(parts) and not _MAGIC.search(parts[fixed]):
        fixed += 1
    start = (Path("/") if absolute else base_dir).joinpath(*parts[:fixed])
    rest = parts[fixed:]
    if ".." in rest:
        raise GlobRefused(f"glob {pattern!r} has '..' after a wildcard; put every '..' before the first wildcard")
    if root is not None and not is_inside(root, start):
        raise GlobRefused(f"glob {pattern!r} starts at {start.resolve()}, outside the recipe's repository "
                          f"{Path(root).resolve()}; move the files inside, or set `allow_inputs_outside: true` at the "
                          "top of the recipe")
    if not rest:
        return [start] if is_file(start) else []
    found: set[str] = set()
    visited = 0
    deadline = time.monotonic() + max_seconds

    def entries(folder: str):
        nonlocal visited
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    visited += 1
                    if visited > max_entries:
                        raise GlobRefused(f"glob {pattern!r} looked at more than {max_entries:,} folder entries; "
                                          "narrow it (e.g. a folder instead of **)")
                    if visited % 1000 == 0 and time.monotonic() > deadline:
                        raise GlobRefused(f"glob {pattern!r} took more than {max_seconds:g} s; narrow it (e.g. a "
                                          "folder instead of **)")
                    yield entry
        except OSError:  # missing, not a folder, unreadable, a name too long: nothing matches there
            return

    def matches(segment: str, name: str) -> bool:
        if name.startswith(".") and not segment.startswith("."):
            return False  # as glob does: wildcards do not match hidden names
        return fnmatch.fnmatchcase(name, segment)

    todo = [(str(start), 0)]
    seen: set[tuple[str, int]] = set()
    while todo:
        folder, index = todo.pop()
        if (folder, index) in seen:
            continue
        seen.add((folder, index))
        segment, last = rest[index], index == len(rest) - 1
        if segment == "**":
            if last:  # `dir/**` means every file below dir
                for entry in entries(folder):
                    if entry.is_dir(follow_symlinks=False):
                        todo.append((entry.path, index))
                    elif not entry.name.startswith(".") and is_file(Path(entry.path)):
                        found.add(entry.path)
                continue
            todo.append((folder, index + 1))  # `**` matching no folder at all
            for entry in entries(folder):
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    todo.append((entry.path, index))
            continue
        for entry in entries(folder):
            if not matches(segment, entry.name):
                continue
            if last:
                if is_file(Path(entry.path)):
                    found.add(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                todo.append((entry.path, index + 1))
    return [Path(p) for p in sorted(found)]


class Unreadable(Exception):
    """Why `read_bounded` read nothing: `kind` is "folder", "special" (a FIFO, device or socket), "symlink",
    "too large" (`size` in bytes, when known) or "error" (`detail`: the OS's reason)."""

    def __init__(self, kind: str, detail: str = "", size: int | None = None):
        super().__init__(kind, detail)
        self.kind, self.detail, self.size = kind, detail, size


def read_bounded(path: Path, limit: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; otherwise `Unreadable` (or
    FileNotFoundError). A FIFO or device is refused without waiting on it, and a file that grows while it is read
    is refused too."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise Unreadable("symlink") from None
        if exc.errno == errno.EISDIR:
            raise Unreadable("folder") from None
        raise Unreadable("error", exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise Unreadable("folder")
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("special")
        if info.st_size > limit:
            raise Unreadable("too large", size=info.st_size)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise Unreadable("error", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable("too large")
    return data
