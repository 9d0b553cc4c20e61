"""Where a recipe may read and svdrender may write: inputs inside the recipe's repository, outputs inside the output
folder. Both checks resolve `..` and symlinks, so neither a path nor a symlinked folder can lead elsewhere."""

from __future__ import annotations

from pathlib import Path

from .errors import JobError


def repository_root(recipe: Path) -> Path:
    """The git work tree holding `recipe` (the nearest folder with a `.git`), or the recipe's folder outside git."""
    folder = Path(recipe).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every `..` and symlink resolved, lies in `root` (also resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def check_output_path(root: Path, path: Path) -> Path:
    """Return `path` if writing it stays inside output folder `root`; raise JobError before anything is written."""
    if not is_inside(root, path):
        raise JobError(f"refusing to write {path}: it resolves to {Path(path).resolve()}, outside the output folder "
                       f"{Path(root).resolve()} (a symlinked subfolder?)")
    return path
