"""`svdrender report OUTDIR [--format markdown|json|junit]`: the manifest and contact sheet are rebuilt from the
sidecars, and CI gets every job as a test case with its error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli_env, invoke_cli, load_json

ERROR = "RuntimeError: CUDA out of memory | tried <2 GiB> & failed\n  at step 3\x1b[0m"


SETTINGS = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 3, "fps": 7, "motion_bucket_id": 127,
            "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "decode_chunk_size": 2,
            "fit": "crop"}


def sidecar(job_id: str, status: str = "ok", error: str | None = None, total: float = 1.25) -> dict:
    """A job sidecar as svdrender writes it (valid against schemas/manifest.schema.json)."""
    item, preset, seed = job_id.split("/")
    seed = int(seed.removeprefix("seed-"))
    ok = status == "ok"
    files = [{"format": "mp4", "path": f"seed-{seed}.mp4", "sha256": "0" * 64, "bytes": 10}] if ok else []
    return {"kind": "svdrender.job", "svdrender_version": "0", "job_id": job_id, "item": item, "preset": preset,
            "seed": seed, "status": status, "error": error, "input": {"path": "inputs/x.jpg", "sha256": "1" * 64},
            "settings": SETTINGS, "preset_spec": {"scheduler": "euler"},
            "scheduler": {"class": "X", "config": {}, "sigmas": [1.0, 0.0], "call_kwargs": {}} if ok else None,
            "model": {"id": "builtin:tiny"}, "versions": {k: "1" for k in ("svdrender", "python", "torch", "diffusers",
                                                                            "transformers", "huggingface_hub")},
            "recipe": {"path": "demo.yaml", "sha256": "2" * 64, "git": None}, "cache_key": "3" * 64,
            "frame_count": 4 if ok else None, "width": 64, "height": 64, "fps": 7,
            "frames_sha256": "4" * 64 if ok else None, "files": files, "timings": {"total": total},
            "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z"}


@pytest.fixture
def out_dir(tmp_path):
    """An output folder as a run with one failed and one interrupted job leaves it."""
    out = tmp_path / "nightly"
    records = [sidecar("coffee/euler/seed-0"), sidecar("coffee/euler/seed-1", "failed", ERROR, 0.5),
               sidecar("rocket/ays/seed-0"), sidecar("rocket/ays/seed-1", "interrupted", "interrupted by SIGTERM", 0)]
    for record in records:
        path = out / record["item"] / record["preset"] / f"seed-{record['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record), encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest_of("nightly-demo", [
        (r["job_id"], r["status"], r["error"] or "") for r in records], "interrupted", "interrupted by SIGTERM")))
    return out


def manifest_of(name: str, jobs, outcome: str = "ok", error: str | None = None) -> dict:
    """A manifest.json as a run leaves it, with its run record: `jobs` are (job id, status, detail)."""
    planned = [{"job_id": job_id, "item": job_id.split("/")[0], "preset": job_id.split("/")[1],
                "seed": int(job_id.split("-")[-1]), "status": status, "detail": detail}
               for job_id, status, detail in jobs]
    return {"kind": "svdrender.run", "svdrender_version": "0", "output_dir": "x", "updated": "2026-01-01T00:00:00Z",
            "run": {"recipe": "demo.yaml", "name": name, "outcome": outcome, "error": error,
                    "exit_code": {"ok": 0, "failed": 1, "interrupted": 143}[outcome], "run_id": "0123456789abcdef",
                    "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z", "model_loads": 1,
                    "processes": 1, "jobs": planned},
            "counts": {}, "jobs": []}


def report(out_dir, *args, code: int = 1):
    proc = invoke_cli("report", out_dir, *args)
    assert proc.returncode == code, proc.stderr
    return proc.stdout


def test_report_rebuilds_manifest_and_contact_sheet_keeping_the_run(out_dir):
    assert report(out_dir) == f"{out_dir / 'manifest.json'}: 4 jobs; contact sheet: {out_dir / 'index.html'}\n"
    manifest = load_json(out_dir / "manifest.json")
    assert manifest["counts"] == {"failed": 1, "interrupted": 1, "ok": 2}
    assert (manifest["run"]["name"], manifest["run"]["recipe"], manifest["run"]["outcome"]) == (
        "nightly-demo", "demo.yaml", "interrupted")
    page = (out_dir / "index.html").read_text(encoding="utf-8")
    assert "<title>nightly-demo · svdrender contact sheet</title>" in page
    assert "CUDA out of memory | tried &lt;2 GiB&gt; &amp; failed" in page


def test_junit_has_every_job_as_a_test_case(out_dir):
    text = report(out_dir, "--format", "junit")
    root = ET.fromstring(text.encode())
    suite = root.find("testsuite")
    assert (root.tag, suite.get("name")) == ("testsuites", "nightly-demo")
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "4", "failures": "1", "errors": "1", "skipped": "0", "time": "3.000"}
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["coffee/euler/seed-0", "coffee/euler/seed-1", "rocket/ays/seed-0", "rocket/ays/seed-1"]
    assert {c.get("classname") for c in cases.values()} == {"svdrender.nightly-demo"}
    failure = cases["coffee/euler/seed-1"].find("failure")
    assert failure.get("message") == "RuntimeError: CUDA out of memory | tried <2 GiB> & failed"
    assert failure.text == ERROR.replace("\x1b", "\ufffd")  # XML 1.0 cannot hold control characters
    assert cases["coffee/euler/seed-1"].get("time") == "0.500"
    error = cases["rocket/ays/seed-1"].find("error")
    assert (error.get("message"), error.get("type")) == ("interrupted by SIGTERM", "interrupted")
    ok = cases["coffee/euler/seed-0"]
    assert [child.tag for child in ok] == ["system-out"] and ok.find("system-out").text == "coffee/euler/seed-0.mp4"


def test_markdown_lists_problems_first_and_every_job(out_dir):
    lines = report(out_dir, "--format", "markdown").splitlines()
    assert lines[0] == "## ❌ svdrender: nightly-demo"
    assert lines[2] == "**run interrupted: interrupted by SIGTERM**"
    assert lines[4] == "4 jobs: 1 failed, 1 interrupted, 2 ok."
    problems = lines[lines.index("### Problems") + 4:lines.index("### Jobs") - 1]
    assert problems == [
        "| coffee/euler/seed-1 | failed | RuntimeError: CUDA out of memory \\| tried &lt;2 GiB&gt; &amp; failed"
        "<br>  at step 3\\[0m |",
        "| rocket/ays/seed-1 | interrupted | interrupted by SIGTERM |"]
    jobs = lines[lines.index("### Jobs") + 4:]
    assert jobs[0] == "| coffee/euler/seed-0 | ok | 1.2 | 64×64 | 4 | 3 | coffee/euler/seed-0.mp4 |"
    assert sum(line.startswith("| ") for line in jobs) == 4


def test_json_has_one_record_per_job(out_dir):
    document = json.loads(report(out_dir, "--format", "json"))
    assert (document["kind"], document["name"], document["ok"]) == ("svdrender.report", "nightly-demo", False)
    assert document["counts"] == {"failed": 1, "interrupted": 1, "ok": 2}
    assert document["jobs"][1] == {"id": "coffee/euler/seed-1", "item": "coffee", "preset": "euler", "seed": 1,
                                   "status": "failed", "error": ERROR, "seconds": 0.5, "files": []}
    assert document["jobs"][0]["files"] == ["coffee/euler/seed-0.mp4"]


def test_all_ok_markdown_and_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert report(tmp_path / "empty", "--format", "markdown", code=0).startswith(
        "## ⚪ svdrender: empty\n\n0 jobs: no jobs.")
    junit = ET.fromstring(report(tmp_path / "empty", "--format", "junit", code=0).encode())
    assert junit.find("testsuite").get("tests") == "0"


def test_report_usage_errors(tmp_path):
    missing = invoke_cli("report", tmp_path / "nope")
    assert (missing.returncode, missing.stderr) == (2, f"svdrender: {tmp_path / 'nope'}: no such folder\n")
    bad = invoke_cli("report", tmp_path, "--format", "html")
    assert bad.returncode == 2 and "'html' is not one of 'markdown', 'json', 'junit'" in bad.stderr


WORKFLOW = REPO / "examples" / "ci" / "nightly.yml"


def test_example_workflow_is_a_valid_github_workflow():
    exe = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s.get("name", s.get("uses")): s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["render"]["steps"]}
    assert steps["Restore the model cache"]["with"]["path"] == "${{ env.HF_HOME }}/hub"
    assert steps["Upload renders, manifests and the contact sheet"]["uses"].startswith("actions/upload-artifact@")


def test_example_workflow_summary_step_runs(out_dir, tmp_path):
    """The workflow's summary step, run as Actions would run it (bash -e), on an output folder with failures."""
    script = next(s["run"] for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["render"]["steps"]
                  if s.get("name") == "Job summary and JUnit report")
    summary = tmp_path / "summary.md"
    env = cli_env(OUT=str(out_dir), GITHUB_STEP_SUMMARY=str(summary),
                  PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert summary.read_text(encoding="utf-8").startswith("## ❌ svdrender: nightly-demo\n\n**run interrupted: "
                                                          "interrupted by SIGTERM**\n\n4 jobs: 1 failed, ")
    assert ET.parse(out_dir / "junit.xml").getroot().find("testsuite").get("failures") == "1"
