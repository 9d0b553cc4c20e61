"""The output lock: one writer per output folder, and the record of which runs may have left temporaries there.

The lock file (layout.LOCK_NAME) holds an exclusive flock while a run (or `svdrender report`) writes the folder; the
kernel releases it if the process dies. Its text is the holder's pid on the first line, then the run ids of every
run that took the lock and has not finished cleanly: a killed run's id stays there, so the next run knows that
temporaries named with it are svdrender's own and sweeps them. A run that ends normally sweeps its own temporaries
and removes the file, so nothing of svdrender's bookkeeping is left for a CI artefact glob to pick up.
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError, OutputLockedError
from .layout import LOCK_NAME

_RUN_ID = re.compile(r"^[0-9a-f]{16}$")
_MAX_LOCK_BYTES = 64 * 1024


@dataclass
class HeldLock:
    """A lock this process holds: the folder, and the ids of the runs whose temporaries it may hold (runs killed
    before they finished, and the runs about to write).

    The holder sets `swept` once no temporary of any run the lock file names (its own included) is left; only then
    is the file removed when the lock is released."""

    out_dir: Path
    runs: frozenset[str]
    swept: bool = False


def _open_locked(path: Path) -> int:
    """An fd holding an exclusive flock on the file now at `path` (retrying if another holder removed it)."""
    for _ in range(100):
        # O_NOFOLLOW: a symlink planted under the lock's name must not make us truncate the file it points to.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split("\n")[0].strip()
            os.close(fd)
            raise OutputLockedError(f"{path.parent}: another svdrender run{f' (pid {holder})' if holder else ''} is "
                                    "writing here; wait for it or use --out to render elsewhere") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder we waited for removed this file as it finished: lock the one there now
    raise OutputLockedError(f"{path}: the output lock keeps being replaced; is another program removing it?")


@contextmanager
def output_lock(out_dir: Path, run_ids: tuple[str, ...] = ()):
    """Hold the output folder's lock, recording `run_ids` (the runs about to write) as unfinished; yield HeldLock.

    The lock file is removed on release if the holder marked it `swept`, and otherwise keeps the run ids for the
    next holder. Filesystem errors (read-only, disk full, name too long) raise OutputError naming the path."""
    path = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
    except OutputLockedError:
        raise
    except OSError as exc:
        raise OutputError(f"{exc.filename or path}: cannot take the output lock ({exc.strerror or exc})") from None
    try:
        try:
            previous = os.pread(fd, _MAX_LOCK_BYTES, 0).decode(errors="replace").split("\n")[1:]
            unfinished = frozenset(line.strip() for line in previous if _RUN_ID.match(line.strip()))
            text = "\n".join([str(os.getpid()), *sorted(unfinished | set(run_ids))]).encode() + b"\n"
            # Written over the old text before cutting it to length: a full disk must not lose the ids it holds.
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the output lock ({exc.strerror or exc})") from None
        held = HeldLock(out_dir, unfinished | frozenset(run_ids))
        try:
            yield held
        finally:
            if held.swept:
                try:
                    # Removed while still locked: a run that opened it meanwhile finds it gone and locks the new one.
                    os.unlink(path)
                except OSError:
                    pass  # the next run reads it and sweeps what it names; nothing is lost
    finally:
        os.close(fd)
