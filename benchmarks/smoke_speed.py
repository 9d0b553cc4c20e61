"""Wall-clock seconds of `svdrender RECIPE --smoke`, the whole CLI command as a CI step runs it.

Each run is a fresh subprocess (interpreter start, torch import, building builtin:tiny, every job, encoding, the
manifest and contact sheet) into a fresh temporary output folder, with HF_HUB_OFFLINE=1. Prints one line per run
and the median.

    python benchmarks/smoke_speed.py [--recipe recipes/product_shots.yaml] [--runs 3]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "product_shots.yaml")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"svdrender {args.recipe} --smoke on {os.cpu_count()} CPU cores (torch threads: default)")
    seconds = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "renderer", str(args.recipe), "--smoke", "--quiet",
                                   "--out", str(out)], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return proc.returncode
            manifest = json.loads((Path(tmp) / "out-smoke" / "manifest.json").read_text())
        seconds.append(elapsed)
        print(f"run {run}: {elapsed:.1f} s, {manifest['counts']} jobs")
    print(f"median: {statistics.median(seconds):.1f} s over {len(seconds)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
