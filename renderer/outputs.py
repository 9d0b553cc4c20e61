"""Video and frame writers, atomic file placement, and per-job sidecar manifests.

Every file is written under a temporary name in its final folder, flushed to disk, then renamed into place, so a
crash never leaves an incomplete file under a final name. The sidecar is written last: it is the record that a job
finished, and its sha256 list lets a rerun tell intact outputs from damaged ones. Every path is checked to resolve
inside the output folder right before it is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import JobError
from .formats import FORMATS
from .layout import TMP_MARKER
from .paths import check_output_path

SIDECAR_KIND = "svdrender.job"

def temp_path(final: Path) -> Path:
    """A temporary sibling of `final`, recognisable so a later run can sweep it."""
    return final.with_name(f".{final.name}{TMP_MARKER}{os.getpid()}")


def sweep_temporaries(root: Path) -> list[Path]:
    """Remove temporaries left by an interrupted or killed run; return what was removed."""
    removed = []
    if not root.is_dir():
        return removed
    for path in root.rglob(f"*{TMP_MARKER}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
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
            old = final.with_name(f".{final.name}{TMP_MARKER}old-{os.getpid()}")
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
    import imageio_ffmpeg

    encoder = FORMATS[fmt].encoder
    height, width = frames.shape[1:3]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    # The command imageio-ffmpeg's write_frames builds, run here because write_frames ignores ffmpeg's exit status
    # (a failed encode would leave an empty file that looks finished).
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
           "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", "-an", "-vcodec", encoder.codec, "-pix_fmt", encoder.pix_fmt,
           "-v", "error", *encoder.args, str(tmp)]
    # ffmpeg's messages go to a file, not a pipe: with nothing to drain, the frames go to its stdin in one blocking
    # write that releases the GIL throughout. communicate() would write them 4 KiB at a time from Python, taking
    # the GIL for every piece while the main thread drives the GPU (4x slower than one write on a 2-core machine).
    # A session of its own: a Ctrl-C meant for svdrender must not kill ffmpeg before svdrender decides what to do.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            try:
                proc.stdin.write(memoryview(np.ascontiguousarray(frames, dtype=np.uint8)).cast("B"))
            except BrokenPipeError:
                pass  # ffmpeg stopped reading: its exit status and messages below say why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            proc.wait()
            if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                err.seek(0)
                raise JobError(f"encoding {fmt} failed: ffmpeg: {_ffmpeg_reason(err.read(), proc.returncode)}")
            _fsync(tmp)
            _place(tmp, final)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tmp.unlink(missing_ok=True)


def _ffmpeg_reason(stderr: bytes, code: int) -> str:
    """ffmpeg's first error line (the cause; later lines are consequences), without its context addresses."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return f"exited with status {code}"
    return re.sub(r"\[(\w+) @ 0x[0-9a-f]+\] ", r"\1: ", lines[0])


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def read_sidecars(root: Path) -> list[dict[str, Any]]:
    """Every job sidecar under an output folder, sorted by job id (shards merge by copying folders together)."""
    records = []
    if not root.is_dir():
        return records
    for path in sorted(root.rglob("seed-*.json")):
        if TMP_MARKER in path.name:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("kind") == SIDECAR_KIND:
            records.append(record)
    return sorted(records, key=lambda r: r.get("job_id", ""))
