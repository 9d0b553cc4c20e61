"""The run manifest, contact sheet and CI reports, rebuilt from job sidecars (the source of truth) at any time."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import __version__
from .contact_sheet import job_folder, write_contact_sheet
from .layout import MANIFEST_NAME
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
    """Rebuild `<out_dir>/manifest.json` and the contact sheet `<out_dir>/index.html` from the sidecars, atomically."""
    manifest = build_manifest(out_dir, run)
    path = out_dir / MANIFEST_NAME
    write_bytes_atomic(path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())
    write_contact_sheet(out_dir, manifest)
    return path


def rebuild(out_dir: Path) -> dict[str, Any]:
    """Rebuild the manifest and contact sheet (e.g. after merging shards), keeping the previous manifest's run
    record (recipe, name); return the new manifest."""
    try:
        run = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        run = None
    path = write_manifest(out_dir, run if isinstance(run, dict) else None)
    return json.loads(path.read_text(encoding="utf-8"))


def summary_table(rows: list[tuple[str, str, str]]) -> str:
    """A plain-text table of (job id, status, detail) rows."""
    if not rows:
        return "no jobs"
    width = max(len(r[0]) for r in rows)
    status_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{job:<{width}}  {status:<{status_width}}  {detail}".rstrip() for job, status, detail in rows)


REPORT_FORMATS = ("markdown", "json", "junit")
_PROBLEM_STATUSES = ("failed", "interrupted")
# Characters XML 1.0 cannot hold at all (escaping does not help); errors may carry terminal control codes.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def format_report(manifest: dict[str, Any], fmt: str) -> str:
    """A run manifest as a CI report: markdown (job summaries), json (one record per job) or junit (test results)."""
    return {"markdown": markdown_report, "json": json_report, "junit": junit_report}[fmt](manifest)


def _suite_name(manifest: dict[str, Any]) -> str:
    return str((manifest.get("run") or {}).get("name") or Path(str(manifest.get("output_dir", "svdrender"))).name)


def _seconds(job: dict[str, Any]) -> float:
    total = (job.get("timings") or {}).get("total")
    return float(total) if isinstance(total, (int, float)) else 0.0


def _videos(job: dict[str, Any]) -> list[str]:
    """Output files relative to the output folder (frames folders are listed once)."""
    folder = job_folder(job)
    paths = []
    for entry in job.get("files") or []:
        path = Path(str(entry.get("path", "")))
        shown = folder / (path.parts[0] if entry.get("format") == "frames" and len(path.parts) > 1 else path)
        if str(shown) not in paths:
            paths.append(str(shown))
    return paths


def json_report(manifest: dict[str, Any]) -> str:
    """One compact record per job: id, status, error, seconds and output files (the manifest has everything else)."""
    jobs = manifest.get("jobs") or []
    document = {
        "kind": "svdrender.report",
        "name": _suite_name(manifest),
        "output_dir": manifest.get("output_dir"),
        "counts": manifest.get("counts") or {},
        "ok": all(j.get("status") == "ok" for j in jobs),
        "jobs": [{"id": j.get("job_id"), "item": j.get("item"), "preset": j.get("preset"), "seed": j.get("seed"),
                  "status": j.get("status"), "error": j.get("error"), "seconds": round(_seconds(j), 3),
                  "files": _videos(j)} for j in jobs],
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def _md(text: Any) -> str:
    """Text made safe for a GitHub-flavoured markdown table cell (no markup, no pipes, no line breaks)."""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", str(text).replace("\t", " "))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", text)
    return "<br>".join(text.splitlines())


def markdown_report(manifest: dict[str, Any]) -> str:
    """A GitHub job summary: counts, the problems first with their errors, then every job."""
    jobs = manifest.get("jobs") or []
    counts = manifest.get("counts") or {}
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no jobs"
    mark = "✅" if jobs and all(j.get("status") == "ok" for j in jobs) else ("❌" if jobs else "⚪")
    lines = [f"## {mark} svdrender: {_md(_suite_name(manifest))}", "", f"{len(jobs)} jobs: {tally}.", ""]
    problems = [j for j in jobs if j.get("status") in _PROBLEM_STATUSES]
    if problems:
        lines += ["### Problems", "", "| job | status | error |", "|---|---|---|"]
        lines += [f"| {_md(j.get('job_id'))} | {_md(j.get('status'))} | {_md(j.get('error') or '')} |"
                  for j in problems]
        lines.append("")
    lines += ["### Jobs", "", "| job | status | seconds | size | frames | steps | output |",
              "|---|---|--:|---|--:|--:|---|"]
    for j in jobs:
        s = j.get("settings") or {}
        size = f"{s.get('width')}×{s.get('height')}" if s else ""
        lines.append(f"| {_md(j.get('job_id'))} | {_md(j.get('status'))} | {_seconds(j):.1f} | {size} | "
                     f"{_md(s.get('num_frames', ''))} | {_md(s.get('num_inference_steps', ''))} | "
                     f"{_md(', '.join(_videos(j)))} |")
    lines += ["", f"Contact sheet: `index.html` in the output folder ({_md(manifest.get('output_dir', ''))}).", ""]
    return "\n".join(lines)


def _xml_text(text: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def junit_report(manifest: dict[str, Any]) -> str:
    """JUnit XML: one test case per job; failed jobs are <failure>s, interrupted ones <error>s, with the message."""
    jobs = manifest.get("jobs") or []
    name = _xml_text(_suite_name(manifest))
    failures = sum(j.get("status") == "failed" for j in jobs)
    errors = sum(j.get("status") not in ("ok", "failed") for j in jobs)
    total_time = f"{sum(_seconds(j) for j in jobs):.3f}"
    attrs = {"name": name, "tests": str(len(jobs)), "failures": str(failures), "errors": str(errors),
             "skipped": "0", "time": total_time}
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "skipped"})
    suite = ET.SubElement(root, "testsuite", {**attrs, "timestamp": str(manifest.get("updated", ""))})
    for j in jobs:
        case = ET.SubElement(suite, "testcase", {"classname": f"svdrender.{name}", "name": _xml_text(j.get("job_id")),
                                                 "time": f"{_seconds(j):.3f}"})
        status = j.get("status")
        if status != "ok":
            message = _xml_text(j.get("error") or f"job {status}")
            kind = "failure" if status == "failed" else "error"
            problem = ET.SubElement(case, kind, {"message": message.splitlines()[0] if message else "",
                                                 "type": _xml_text(status)})
            problem.text = message
        outputs = _videos(j)
        if outputs:
            ET.SubElement(case, "system-out").text = _xml_text("\n".join(outputs))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
