"""Whole `svdrender` commands as a user runs them: process start to exit, for several profiles in one run.

For each run spec it starts `python -m renderer RECIPE --profile P --out DIR --force` as a subprocess, times it from
spawn to exit, and reads the job sidecars it wrote: the first job's GPU path (prepare + denoise + decode, which holds
any compile) and the steady state (median of the later jobs' GPU paths, per preset). "start-up" is everything the
command spent outside the jobs' GPU paths before its first job finished (imports, model load, profile set-up).

A run spec is PROFILE or PROFILE:CACHE with CACHE `empty` (a fresh compile cache, as a new CI runner has) or `warm`
(the cache the previous runs of this invocation filled, as a CI cache restore gives); the default is `warm`.

    python benchmarks/cli_command.py benchmarks/recipes/sampler_ladder.yaml --runs off,fast:empty,fast:warm \
        --json benchmarks/results/cli_sampler_ladder_h100.json
    python benchmarks/cli_command.py recipes/demo.yaml --runs off,off          # CPU: the demo, twice
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_PATH = ("prepare", "denoise", "decode")


def run_command(recipe: Path, profile: str, out: Path, cache: Path, extra: list[str]) -> dict:
    env = {**os.environ, "SVDRENDER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "renderer", str(recipe), "--profile", profile, "--out", str(out), "--force", "-q",
           *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    whole = time.perf_counter() - start
    sidecars = [json.loads(p.read_text()) for p in sorted(out.rglob("seed-*.json"))]
    jobs = sorted((s for s in sidecars if s.get("status") == "ok"), key=lambda s: s["started"])
    paths = [sum(s["timings"].get(k, 0.0) for k in GPU_PATH) for s in jobs]
    # Sidecar `started` has one-second resolution; jobs run in plan order, which is the order of their `total`s.
    by_preset: dict[str, list[float]] = {}
    for s, t in zip(jobs[1:], paths[1:]):
        by_preset.setdefault(s["preset"], []).append(t)
    first_finished = jobs[0]["timings"]["total"] if jobs else None
    return {
        "profile": profile, "exit_code": proc.returncode, "whole_s": round(whole, 2), "jobs_ok": len(jobs),
        "first_job_path_s": round(paths[0], 2) if paths else None,
        "steady_path_s": round(statistics.median(paths[1:]), 3) if len(paths) > 1 else None,
        "steady_path_by_preset_s": {k: round(statistics.median(v), 3) for k, v in by_preset.items()},
        "first_job_total_s": first_finished,
        "load_s": jobs[0]["timings"].get("load") if jobs else None,
        "profile_used": (jobs[0].get("performance") or {}).get("profile") if jobs else None,
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--runs", default="off,fast:empty,fast:warm", help="comma-separated PROFILE[:empty|:warm]")
    parser.add_argument("--json", type=Path)
    args, extra = parser.parse_known_args()  # anything else goes to svdrender, e.g. --model builtin:tiny
    results = []
    with tempfile.TemporaryDirectory(prefix="svdrender-cli-bench-") as tmp:
        warm_cache = Path(tmp) / "cache-warm"
        for i, spec in enumerate(args.runs.split(",")):
            profile, _, cache_state = spec.partition(":")
            cache = Path(tmp) / f"cache-empty-{i}" if cache_state == "empty" else warm_cache
            result = run_command(args.recipe.resolve(), profile, Path(tmp) / f"out-{i}", cache, extra)
            result["cache"] = cache_state or "warm"
            if cache_state == "empty":  # later warm runs reuse what this one compiled
                warm_cache = cache
            results.append(result)
            print(f"{spec:<12} exit {result['exit_code']}  whole {result['whole_s']:7.1f} s  "
                  f"jobs {result['jobs_ok']}  load {result['load_s'] or 0:5.1f} s  "
                  f"first job {result['first_job_path_s'] or 0:6.1f} s  steady {result['steady_path_s'] or 0:6.2f} s"
                  f"  by preset {result['steady_path_by_preset_s']}", flush=True)
            if result["exit_code"]:
                print(result["stderr_tail"], file=sys.stderr)
            if args.json:  # after every run, so a run cut short by a time limit keeps the ones before it
                args.json.write_text(json.dumps({"recipe": str(args.recipe), "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
