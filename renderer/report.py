"""The run manifest, contact sheet and CI reports, rebuilt from job sidecars (the source of truth) at any time."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from . import __version__
from .contact_sheet import is_own_contact_sheet, write_contact_sheet
from .errors import EXIT_JOB_FAILED, EXIT_OK, OutputError, UsageError
from .layout import INDEX_NAME, MANIFEST_NAME
from .outputs import read_sidecars, write_bytes_atomic
from .records import (CORRUPT, FAILED, INTERRUPTED, NOT_RUN, OK, Entry, Manifest, RunRecord, is_own_manifest,
                      read_run_record)


def check_own_files(out_dir: Path) -> None:
    """Refuse (exit 2) an output folder whose manifest.json or index.html is not svdrender's: rewriting them would
    destroy someone else's file."""
    for name, own in ((MANIFEST_NAME, is_own_manifest), (INDEX_NAME, is_own_contact_sheet)):
        if not own(out_dir / name):
            raise UsageError(f"{out_dir / name}: not written by svdrender; refusing to overwrite it (move it away, "
                             "or render into another folder with --out)")


def build_manifest(out_dir: Path, run: RunRecord | None = None) -> Manifest:
    """The run manifest: the run record and every valid job sidecar of `out_dir`."""
    jobs, corrupt = read_sidecars(out_dir)
    return Manifest(version=__version__, output_dir=str(out_dir),
                    updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), run=run, jobs=tuple(jobs),
                    corrupt=tuple(corrupt))


def write_manifest(out_dir: Path, run: RunRecord | None = None) -> tuple[Path, Manifest]:
    """Rebuild `<out_dir>/manifest.json` and the contact sheet `<out_dir>/index.html` from the sidecars, atomically.

    A filesystem error (disk full, read-only) raises OutputError naming the file."""
    manifest = build_manifest(out_dir, run)
    path = out_dir / MANIFEST_NAME
    try:
        write_bytes_atomic(path, (json.dumps(manifest.to_json(), indent=2, default=str) + "\n").encode())
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the run manifest ({exc.strerror or exc})") from None
    try:
        write_contact_sheet(out_dir, manifest)
    except OSError as exc:
        raise OutputError(f"{out_dir / INDEX_NAME}: cannot write the contact sheet ({exc.strerror or exc})") from None
    return path, manifest


def rebuild(out_dir: Path) -> Manifest:
    """Rebuild the manifest and contact sheet (e.g. after merging shards), keeping the previous manifest's run
    record; return the new manifest."""
    return write_manifest(out_dir, read_run_record(out_dir / MANIFEST_NAME))[1]


def read_report(out_dir: Path) -> Manifest:
    """The manifest as `rebuild` would make it, without writing anything (a snapshot while a render holds the
    folder)."""
    return build_manifest(out_dir, read_run_record(out_dir / MANIFEST_NAME))


def report_exit_code(manifest: Manifest) -> int:
    """0 when the run (if recorded) and every job are ok; 1 when the run or any job failed, was interrupted or
    never ran."""
    return EXIT_OK if manifest.ok else EXIT_JOB_FAILED


def summary_table(rows: list[tuple[str, str, str]]) -> str:
    """A plain-text table of (job id, status, detail) rows."""
    if not rows:
        return "no jobs"
    width = max(len(r[0]) for r in rows)
    status_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{job:<{width}}  {status:<{status_width}}  {detail}".rstrip() for job, status, detail in rows)


REPORT_FORMATS = ("markdown", "json", "junit")
_PROBLEM_STATUSES = (FAILED, INTERRUPTED, NOT_RUN, CORRUPT)
# Characters XML 1.0 cannot hold at all (escaping does not help); errors may carry terminal control codes.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def format_report(manifest: Manifest, fmt: str) -> str:
    """A run manifest as a CI report: markdown (job summaries), json (one record per job) or junit (test results)."""
    return {"markdown": markdown_report, "json": json_report, "junit": junit_report}[fmt](manifest)


def _videos(entry: Entry) -> list[str]:
    """Output files relative to the output folder (frames folders are listed once)."""
    if entry.sidecar is None or entry.status == NOT_RUN:
        return []
    paths = []
    for file in entry.sidecar.files:
        path = Path(file.path)
        shown = entry.sidecar.folder / (path.parts[0] if file.format == "frames" and len(path.parts) > 1 else path)
        if str(shown) not in paths:
            paths.append(str(shown))
    return paths


def _run_problem(manifest: Manifest) -> str | None:
    """The run-level failure a reader must see first (model load, signal, filesystem), or None."""
    run = manifest.run
    if run is None or run.outcome == OK:
        return None
    return f"run {run.outcome}" + (f": {run.error}" if run.error else "")


def json_report(manifest: Manifest) -> str:
    """One compact record per job: id, status, error, seconds and output files (the manifest has everything else)."""
    run = manifest.run
    document = {
        "kind": "svdrender.report",
        "name": manifest.name,
        "output_dir": manifest.output_dir,
        "run": {"outcome": run.outcome, "error": run.error, "exit_code": run.exit_code} if run else None,
        "counts": manifest.counts,
        "ok": manifest.ok,
        "jobs": [{"id": e.job_id, "item": e.item, "preset": e.preset, "seed": e.seed, "status": e.status,
                  "error": e.error, "seconds": round(e.seconds, 3), "files": _videos(e)} for e in manifest.entries],
    }
    if manifest.corrupt:
        document["corrupt"] = list(manifest.corrupt)
    return json.dumps(document, indent=2, default=str) + "\n"


def _md(text) -> str:
    """Text made safe for a GitHub-flavoured markdown table cell (no markup, no pipes, no line breaks)."""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", str(text).replace("\t", " "))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", text)
    return "<br>".join(text.splitlines())


def markdown_report(manifest: Manifest) -> str:
    """A GitHub job summary: the run's failure first, then counts, the problem jobs with their errors, every job."""
    entries = manifest.entries
    tally = ", ".join(f"{n} {status}" for status, n in manifest.counts.items()) or "no jobs"
    mark = "✅" if entries and manifest.ok else ("❌" if entries or not manifest.ok else "⚪")
    lines = [f"## {mark} svdrender: {_md(manifest.name)}", ""]
    problem = _run_problem(manifest)
    if problem:
        lines += [f"**{_md(problem)}**", ""]
    lines += [f"{len(entries)} jobs: {tally}.", ""]
    problems = [e for e in entries if e.status in _PROBLEM_STATUSES]
    if problems:
        lines += ["### Problems", "", "| job | status | error |", "|---|---|---|"]
        lines += [f"| {_md(e.job_id)} | {_md(e.status)} | {_md(e.error or '')} |" for e in problems]
        lines.append("")
    if manifest.corrupt:
        lines += ["### Corrupt sidecars (their jobs render again)", ""]
        lines += [f"- {_md(c)}" for c in manifest.corrupt]
        lines.append("")
    lines += ["### Jobs", "", "| job | status | seconds | size | frames | steps | output |",
              "|---|---|--:|---|--:|--:|---|"]
    for e in entries:
        s = e.sidecar.settings if e.sidecar is not None else {}
        size = f"{s.get('width')}×{s.get('height')}" if s else ""
        lines.append(f"| {_md(e.job_id)} | {_md(e.status)} | {e.seconds:.1f} | {size} | "
                     f"{_md(s.get('num_frames', ''))} | {_md(s.get('num_inference_steps', ''))} | "
                     f"{_md(', '.join(_videos(e)))} |")
    lines += ["", f"Contact sheet: `index.html` in the output folder ({_md(manifest.output_dir)}).", ""]
    return "\n".join(lines)


def _xml_text(text) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def junit_report(manifest: Manifest) -> str:
    """JUnit XML: one test case per planned job; failed jobs are <failure>s, interrupted ones <error>s, jobs that
    never ran <skipped> with the reason; a run that failed as a whole (model load, signal) adds a `run` case with
    its <error>, so no CI system shows a run green that rendered nothing."""
    entries = manifest.entries
    name = _xml_text(manifest.name)
    problem = _run_problem(manifest)
    # A run that failed as a whole with no job saying so (model load, a signal before the first job) gets a case of
    # its own; otherwise the failed or interrupted job carries it.
    run_failed = problem is not None and not any(e.status in (FAILED, INTERRUPTED) for e in entries)
    failures = sum(e.status == FAILED for e in entries)
    errors = sum(e.status not in (OK, FAILED, NOT_RUN) for e in entries) + run_failed
    skipped = sum(e.status == NOT_RUN for e in entries)
    total_time = f"{sum(e.seconds for e in entries):.3f}"
    attrs = {"name": name, "tests": str(len(entries) + run_failed), "failures": str(failures),
             "errors": str(errors), "skipped": str(skipped), "time": total_time}
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "skipped"})
    suite = ET.SubElement(root, "testsuite", {**attrs, "timestamp": manifest.updated})
    if run_failed:
        case = ET.SubElement(suite, "testcase", {"classname": f"svdrender.{name}", "name": "run", "time": "0.000"})
        message = _xml_text(manifest.run.error or problem)
        ET.SubElement(case, "error", {"message": message.splitlines()[0] if message else "",
                                      "type": _xml_text(manifest.run.outcome)}).text = message
    for e in entries:
        case = ET.SubElement(suite, "testcase", {"classname": f"svdrender.{name}", "name": _xml_text(e.job_id),
                                                 "time": f"{e.seconds:.3f}"})
        if e.status == NOT_RUN:
            ET.SubElement(case, "skipped", {"message": _xml_text(e.error or "not run").splitlines()[0]})
        elif e.status != OK:
            message = _xml_text(e.error or f"job {e.status}")
            kind = "failure" if e.status == FAILED else "error"
            problem_element = ET.SubElement(case, kind, {"message": message.splitlines()[0] if message else "",
                                                         "type": _xml_text(e.status)})
            problem_element.text = message
        outputs = _videos(e)
        if outputs:
            ET.SubElement(case, "system-out").text = _xml_text("\n".join(outputs))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
