"""CPU: how much more the first job of a batch costs than the next ones, and where that time is booked.

Renders `recipes/demo.yaml` (builtin:tiny, 4 jobs) with the real CLI into fresh folders, `--runs` times for each
OpenMP wait policy asked for, and prints every job's timings from its sidecar: load, prepare, denoise, decode,
encode, total, in render order. An OMP_WAIT_POLICY of "" leaves the variable unset (svdrender's own choice).

    python benchmarks/cpu_first_job.py [--runs 3] [--policy "" --policy ACTIVE --policy PASSIVE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ("load", "prepare", "denoise", "decode", "encode", "total")


def render(out: Path, policy: str) -> tuple[float, list[tuple[str, dict]]]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "renderer", "recipes/demo.yaml", "--out", str(out), "-q"], cwd=REPO,
                   env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    jobs = [json.loads(p.read_text()) for p in out.glob("*/*/seed-*.json")]
    jobs.sort(key=lambda j: (-j["timings"].get("load", 0), j["started"]))  # the job that loaded the model first
    return wall, [(j["job_id"], j["timings"]) for j in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--policy", action="append", help='OMP_WAIT_POLICY value; "" leaves it unset')
    args = parser.parse_args()
    policies = args.policy if args.policy is not None else ["", "ACTIVE", "PASSIVE"]
    print(f"{os.cpu_count()} CPUs; demo recipe, 4 jobs; seconds from each job's sidecar (first row: the job that "
          "loaded the model)")
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            for run in range(args.runs):
                wall, jobs = render(Path(tmp) / f"{policy or 'unset'}-{run}", policy)
                print(f"\nOMP_WAIT_POLICY={policy or '(unset)'} run {run + 1}: {wall:.1f} s wall")
                print("  " + " ".join(f"{p:>8}" for p in PARTS) + "  job")
                for job_id, timings in jobs:
                    print("  " + " ".join(f"{timings.get(p, 0):8.3f}" for p in PARTS) + f"  {job_id}")


if __name__ == "__main__":
    main()
