"""The run manifest and summaries, rebuilt from job sidecars (the source of truth) at any time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import __version__
from .outputs import read_sidecars, write_bytes_atomic

RUN_KIND = "svdrender.run"


def build_manifest(out_dir: Path, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run manifest: every job sidecar under `out_dir`, with status counts."""
    jobs = read_sidecars(out_dir)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.get("status", "unknown")] = counts.get(job.get("status", "unknown"), 0) + 1
    return {
        "kind": RUN_KIND,
        "svdrender_version": __version__,
        "output_dir": str(out_dir),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": run or {},
        "counts": dict(sorted(counts.items())),
        "jobs": jobs,
    }


def write_manifest(out_dir: Path, run: dict[str, Any] | None = None) -> Path:
    """Rebuild `<out_dir>/manifest.json` from the sidecars, atomically."""
    manifest = build_manifest(out_dir, run)
    path = out_dir / "manifest.json"
    write_bytes_atomic(path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())
    return path


def summary_table(rows: list[tuple[str, str, str]]) -> str:
    """A plain-text table of (job id, status, detail) rows."""
    if not rows:
        return "no jobs"
    width = max(len(r[0]) for r in rows)
    status_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{job:<{width}}  {status:<{status_width}}  {detail}".rstrip() for job, status, detail in rows)
