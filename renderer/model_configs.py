"""A model's unet/config.json, read without torch and never downloaded: from a local model folder, from the Hugging
Face cache, or from a built-in model's data.

The file is someone else's: it may be missing, huge, not JSON, a FIFO or a link to a device. It is read bounded, and
a file that cannot be used is reported as a reason, never as an exception, so that validate and plan go on with the
known family or svdrender's default.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .model_families import BUILTIN_CONFIGS
from .paths import is_dir, local_model_path

UNET_CONFIG = "unet/config.json"
MAX_CONFIG_BYTES = 1024 * 1024  # SVD's unet/config.json is about 2 KB; anything near this is not a config


@dataclass(frozen=True)
class UnetConfig:
    """A model's unet config: where it was read and what it holds, or why it cannot be used."""

    file: str  # the file read, or the built-in model's id
    data: Mapping[str, Any] | None
    problem: str | None = None  # why `file` is ignored (data is None then)


def read_unet_config(model_id: str, revision: str, base_dir: Path) -> UnetConfig | None:
    """The unet config of the model a recipe names (a folder's may be missing: its problem says so), or None when
    there is none to read here: a hub model whose config is not in the local cache, an id that names nothing."""
    if model_id.startswith("builtin:"):
        builtin = BUILTIN_CONFIGS.get(model_id)
        return UnetConfig(model_id, builtin.unet) if builtin else None
    local = local_model_path(model_id, base_dir)
    if is_dir(local):
        return _read(local / UNET_CONFIG)
    cached = _cached(model_id, revision)
    return _read(Path(cached)) if cached else None


def _cached(model_id: str, revision: str) -> str | None:
    """The path of the model's unet config in the local Hugging Face cache (offline: never a download), or None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    if ".." in revision:  # no git ref has one; the cache would read it as a path under refs/
        return None
    try:
        found = try_to_load_from_cache(model_id, UNET_CONFIG, revision=revision)
    except (HFValidationError, OSError, ValueError):  # not a repository id, or a cache the OS will not read
        return None
    return found if isinstance(found, str) else None


def _read(path: Path) -> UnetConfig:
    shown = str(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return UnetConfig(shown, None, f"cannot be read ({exc.strerror})")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return UnetConfig(shown, None, "is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            return UnetConfig(shown, None, f"cannot be read ({exc.strerror})")
    if len(raw) > MAX_CONFIG_BYTES:
        return UnetConfig(shown, None, f"is larger than {MAX_CONFIG_BYTES // 1024 ** 2} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return UnetConfig(shown, None, "is not UTF-8 text")
    except RecursionError:
        return UnetConfig(shown, None, "is JSON nested too deeply to be a config")
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return UnetConfig(shown, None, f"is not JSON ({str(exc)[:120]})")
    if not isinstance(data, dict):
        return UnetConfig(shown, None, "is not a JSON object")
    return UnetConfig(shown, data)
