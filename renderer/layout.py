"""The on-disk layout of an output folder: where each job's files go, the names svdrender gives its own files, and
how files are hashed. One place, shared by recipe checks, plan, outputs, the run loop, report and the contact sheet."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .formats import FORMATS

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.html"
LOCK_NAME = ".svdrender.lock"
# Temporaries are named `.<final name><TMP_MARKER><run id>`; the run id is recorded in the lock file, so a later run
# sweeps exactly the temporaries svdrender made (outputs.temp_path, lock.output_lock).
TMP_MARKER = ".svdtmp-"
SIDECAR_SUFFIX = ".json"
# `<out>/<item>/input.jpg`: a thumbnail of the item's input image, shown on the contact sheet.
INPUT_THUMBNAIL_NAME = "input.jpg"

# Names an item or preset may not take, because a job folder of that name would collide with these files.
RESERVED_NAMES = frozenset({MANIFEST_NAME, INDEX_NAME, LOCK_NAME, INPUT_THUMBNAIL_NAME})


def job_paths(out_dir: Path, item: str, preset: str, seed: int, formats) -> tuple[dict[str, Path], Path]:
    """`<dir>/<item>/<preset>/seed-<n>.<ext>` for each format (frames: a folder), and the sidecar path."""
    stem = out_dir / item / preset / f"seed-{seed}"
    outputs = {fmt: stem.with_suffix("." + FORMATS[fmt].extension) if FORMATS[fmt].is_file else stem
               for fmt in formats}
    return outputs, stem.with_suffix(SIDECAR_SUFFIX)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (videos may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
