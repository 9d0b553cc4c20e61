"""What a sidecar records about where a job ran: library versions, and the git commit of the recipe."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__


def versions() -> dict[str, str]:
    """Versions of everything that can change a job's frames."""
    return dict(_installed_versions())


@functools.lru_cache(maxsize=1)
def _installed_versions() -> dict[str, str]:
    # Looked up once a process: ~8-14 ms of metadata reads, which every sidecar would otherwise pay, the batch's
    # last one after its video is encoded.
    found = {"svdrender": __version__, "python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "imageio-ffmpeg", "numpy",
                 "pillow"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def git_commit(path: Path) -> dict[str, Any] | None:
    """The git commit holding `path`, and whether the file differs from it; None outside a repository."""
    try:
        commit = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path.parent), "status", "--porcelain", "--", path.name],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
