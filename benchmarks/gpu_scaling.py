"""Multi-GPU scaling: the same recipe rendered by 1 process and by N processes (`accelerate launch`), full-size
SVD-XT architecture with random weights (builtin:svd-xt-random; nothing to download).

Throughput counts rendering only (model loading excluded, it is paid once per process per batch): for each run,
videos / (the slowest process's summed job time), read from the job sidecars. Also prints wall-clock totals.

    python benchmarks/gpu_scaling.py --processes 2 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RECIPE = """\
version: 1
name: scaling
allow_inputs_outside: true   # the recipe lives in a temporary folder; the inputs are the repo's examples
model: builtin:svd-xt-random
output: {{dir: out, formats: [mp4]}}
defaults:
  width: 1024
  height: 576
  num_frames: 25
  num_inference_steps: {steps}
  decode_chunk_size: 8
  seeds: {{start: 0, count: {seeds}}}
items:
  - {{name: coffee, image: {inputs}/coffee.jpg}}
  - {{name: rocket, image: {inputs}/rocket.jpg}}
"""


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall


def render_seconds(out: Path) -> tuple[int, float, dict]:
    """Jobs rendered, and the slowest device's summed render time (load excluded)."""
    manifest = json.loads((out / "manifest.json").read_text())
    per_device: dict[str, float] = {}
    for job in manifest["jobs"]:
        t = job["timings"]
        per_device.setdefault(job["model"]["device"], 0.0)
        per_device[job["model"]["device"]] += t["total"] - t.get("load", 0.0)
    return len(manifest["jobs"]), max(per_device.values()), per_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=4, help="seeds per image (2 images)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="svd-scaling-"))
    (work / "recipe.yaml").write_text(RECIPE.format(steps=args.steps, seeds=args.seeds,
                                                    inputs=REPO / "recipes" / "inputs"))
    results = {}
    for n in (1, args.processes):
        out = work / f"out-{n}"
        if n == 1:
            cmd = [sys.executable, "-m", "renderer", "recipe.yaml", "--out", str(out), "--quiet"]
        else:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "renderer", "recipe.yaml", "--out", str(out), "--quiet"]
        wall = run(cmd, work)
        jobs, slowest, per_device = render_seconds(out)
        results[n] = {"processes": n, "jobs": jobs, "wall_s": round(wall, 1), "render_s": round(slowest, 1),
                      "videos_per_s": round(jobs / slowest, 4), "per_device_s": per_device}
        print(json.dumps(results[n]), flush=True)
    speedup = results[args.processes]["videos_per_s"] / results[1]["videos_per_s"]
    summary = {"speedup": round(speedup, 3), "wall_speedup": round(results[1]["wall_s"] /
                                                                  results[args.processes]["wall_s"], 3),
               "runs": list(results.values()), "steps": args.steps, "videos": results[1]["jobs"]}
    print(textwrap.dedent(f"""
        {args.processes} processes vs 1: {speedup:.2f}x videos/s (rendering), {summary['wall_speedup']:.2f}x wall
    """).strip())
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
