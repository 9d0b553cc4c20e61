"""Video and frame writers, atomic file placement, and per-job sidecar manifests.

Every file is written under a temporary name in its final folder, flushed to disk, then renamed into place, so a
crash never leaves an incomplete file under a final name. The sidecar is written last: it is the record that a job
finished, and its sha256 list lets a rerun tell intact outputs from damaged ones. Every path is checked to resolve
inside the output folder right before it is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import ffmpeg
from .errors import JobError
from .formats import FORMATS
from .layout import LOCK_NAME, MANIFEST_NAME, TMP_MARKER, file_sha256
from .paths import check_output_path
from .records import CorruptRecord, Sidecar, read_sidecar

def run_id() -> str:
    """This process's run id (16 hex digits): it names every temporary the process writes, and each run records it
    in its output folder's lock file, so a later run sweeps exactly the temporaries svdrender made there."""
    return _run_id(os.getpid())  # keyed by pid: a forked child is a writer of its own


@functools.lru_cache(maxsize=4)
def _run_id(pid: int) -> str:
    return secrets.token_hex(8)


_TEMPORARY = re.compile(r"^\.(?P<name>.+)" + re.escape(TMP_MARKER) + r"(?P<run>[0-9a-f]{16})(?:-old)?$")


def temp_path(final: Path) -> Path:
    """A temporary sibling of `final`: `.<name>.svdtmp-<run id>`, recognisable so a later run can sweep it."""
    return final.with_name(f".{final.name}{TMP_MARKER}{run_id()}")


def temporary_run(path: Path) -> str | None:
    """The run id a temporary's name carries, or None when `path` is not named like svdrender's temporaries."""
    found = _TEMPORARY.match(path.name)
    return found["run"] if found else None


def is_other_output_folder(folder: Path) -> bool:
    """Whether `folder` is another run's output folder (it has its own lock or manifest): never swept or read."""
    return any(os.path.lexists(folder / name) for name in (LOCK_NAME, MANIFEST_NAME))


def job_folders(root: Path, *, with_items: bool = False) -> list[Path]:
    """`<root>/<item>/<preset>` folders (and the `<root>/<item>` folders too, `with_items`), real folders only (no
    symlinks), skipping other runs' output folders."""
    found = []
    for level1 in _subfolders(root):
        if is_other_output_folder(level1):
            continue
        found += [level1] if with_items else []
        found += [level2 for level2 in _subfolders(level1) if not is_other_output_folder(level2)]
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def sweep_temporaries(root: Path, runs) -> list[Path]:
    """Remove the temporaries that runs `runs` (ids this folder recorded) left in output folder `root`, its item
    folders (input thumbnails) and its job folders; return what was removed. Nothing else is touched: not a user's
    file that merely looks like a temporary, not a nested run's output folder, nothing reached through a symlink."""
    runs = set(runs)
    removed = []
    if not runs or not root.is_dir():
        return removed
    for folder in (root, *job_folders(root, with_items=True)):
        try:
            with os.scandir(folder) as entries:
                candidates = [Path(e.path) for e in entries if temporary_run(Path(e.name)) in runs]
        except OSError:
            continue
        for path in candidates:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue  # another thread of this process placed or removed it meanwhile
            except OSError:
                continue  # left for the next run; sweeping never fails a run
            removed.append(path)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, final: Path) -> None:
    """Rename a finished temporary into place and make the rename durable."""
    if tmp.is_dir():
        if final.exists():
            old = final.with_name(f".{final.name}{TMP_MARKER}{run_id()}-old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    else:
        os.replace(tmp, final)
    _fsync(final.parent)


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Write `data` to `final` atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _place(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def encode_video(frames: np.ndarray, final: Path, fmt: str, fps: int) -> None:
    """Encode uint8 frames [F, H, W, 3] with the ffmpeg that imageio-ffmpeg ships, atomically; a failed encode
    raises JobError with ffmpeg's own reason and leaves nothing behind."""
    encoder = FORMATS[fmt].encoder
    height, width = frames.shape[1:3]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    # The command imageio-ffmpeg's write_frames builds, run here because write_frames ignores ffmpeg's exit status
    # (a failed encode would leave an empty file that looks finished).
    args = ["-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}", "-pix_fmt", "rgb24", "-r",
            str(fps), "-i", "-", "-an", "-vcodec", encoder.codec, "-pix_fmt", encoder.pix_fmt, "-v", "error",
            *encoder.args, str(tmp)]
    try:
        ffmpeg.run(args, frames, what=f"encoding {fmt}")
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise JobError(f"encoding {fmt} failed: ffmpeg: it wrote nothing")
        _fsync(tmp)
        _place(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_frames_folder(frames: np.ndarray, final: Path) -> list[Path]:
    """Write PNG frames into a temporary folder, then rename the whole folder into place."""
    from PIL import Image

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for index, frame in enumerate(frames):
            target = tmp / f"frame-{index:04d}.png"
            Image.fromarray(frame).save(target, format="PNG")
            _fsync(target)
        _place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(final.iterdir())


def frames_sha256(frames: np.ndarray) -> str:
    """sha256 of the uint8 frame array [F, H, W, 3], C order: equal hashes mean identical pixels."""
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.uint8).tobytes()).hexdigest()


def write_outputs(frames: np.ndarray, outputs: dict[str, Path], fps: int, *, root: Path) -> list[dict[str, Any]]:
    """Write every requested format inside output folder `root`; return file records (path relative to the
    sidecar's folder, sha256, bytes)."""
    records = []
    for fmt, final in outputs.items():
        check_output_path(root, final)
        if fmt == "frames":
            files = write_frames_folder(frames, final)
        else:
            encode_video(frames, final, fmt, fps)
            files = [final]
        for path in files:
            records.append({"format": fmt, "path": str(path.relative_to(final.parent)),
                            "sha256": file_sha256(path), "bytes": path.stat().st_size})
    return records


THUMBNAIL_SIZE = (320, 320)


def write_input_thumbnail(image: Path, final: Path, *, root: Path) -> None:
    """A JPEG thumbnail (at most 320×320) of input `image`, written atomically inside output folder `root`."""
    import io

    from .images import load_image

    check_output_path(root, final)
    img = load_image(image)
    img.thumbnail(THUMBNAIL_SIZE)
    data = io.BytesIO()
    img.convert("RGB").save(data, format="JPEG", quality=85)
    write_bytes_atomic(final, data.getvalue())


def write_sidecar(path: Path, record: dict[str, Any], *, root: Path) -> None:
    """Write a job's sidecar manifest atomically inside output folder `root` (last, after its outputs)."""
    check_output_path(root, path)
    write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=False, default=str) + "\n").encode())


def retract_sidecar(path: Path, *, root: Path) -> None:
    """Remove a job's sidecar before its outputs are replaced, so no "ok" record ever describes other files."""
    check_output_path(root, path)
    if path.exists():
        path.unlink()
        _fsync(path.parent)


def read_sidecars(root: Path) -> tuple[list[Sidecar], list[str]]:
    """Every valid job sidecar of output folder `root` (`<item>/<preset>/seed-<n>.json`, whose own job id matches
    where it lies), sorted by job id; and the sidecars that could not be used, as "relative path: reason".

    Other runs' output folders nested inside are skipped; shards merge by copying job folders together."""
    records, corrupt = [], []
    if not root.is_dir():
        return records, corrupt
    for folder in job_folders(root):
        try:
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries if _SIDECAR_NAME.match(e.name))
        except OSError:
            continue
        for name in names:
            path = folder / name
            relative = path.relative_to(root)
            try:
                record = read_sidecar(path)
            except FileNotFoundError:
                continue  # retracted by a render meanwhile
            except CorruptRecord as exc:
                corrupt.append(f"{relative}: {exc}")
                continue
            if record.job_id != f"{relative.parent}/{relative.stem}":
                corrupt.append(f"{relative}: its job_id {record.job_id!r} is not where it lies")
                continue
            records.append(record)
    return sorted(records, key=lambda r: r.job_id), corrupt


_SIDECAR_NAME = re.compile(r"^seed-[0-9]+\.json$")
