"""CPU-side speed: `svdrender validate` and `svdrender plan` on a generated 1,000-job recipe.

Prints, for each command, the in-process time (load + validate + plan, what a pre-commit hook or CI step waits
for beyond interpreter start) and the wall-clock time of the real CLI in a subprocess, and checks that neither
imported torch, diffusers or transformers.

    python benchmarks/cpu_plan_speed.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers")


def write_recipe(folder: Path, jobs: int) -> Path:
    """items × 4 presets × 5 seeds ≥ jobs; every item points at one of the example images."""
    shutil.copytree(REPO / "recipes" / "inputs", folder / "inputs")
    images = ["inputs/coffee.jpg", "inputs/rocket.jpg", "inputs/astronaut.png", "inputs/products/chelsea.jpg"]
    items = -(-jobs // 20)
    lines = ["version: 1", "model: builtin:tiny", "presets:", "  crisp: {scheduler: dpmpp_2m_sde_karras}",
             "  fast: {scheduler: euler, sigmas: ays}", "defaults:",
             "  presets: [euler, crisp, fast, dpmpp_2m_ays]", "  seeds: {start: 0, count: 5}", "items:"]
    lines += [f"  - {{name: item-{i:04d}, image: {images[i % len(images)]}, motion_bucket_id: {i % 255}}}"
              for i in range(items)]
    path = folder / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def in_process(args: list[str]) -> tuple[float, list[str]]:
    code = ("import sys, time, io, contextlib\n"
            "t = time.perf_counter()\n"
            "from renderer.cli import main\n"
            f"sys.argv = ['svdrender'] + {args!r}\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main()\n    except SystemExit as e:\n        code = e.code\n"
            "print(time.perf_counter() - t, code, ','.join(m for m in " + repr(HEAVY) + " if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    seconds, code, heavy = (proc.stdout.strip().splitlines()[-1].split(" ") + [""])[:3]
    assert code in ("0", "None"), proc.stderr
    return float(seconds), [m for m in heavy.split(",") if m]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="svd-plan-speed-"))
    recipe = write_recipe(folder, args.jobs)
    results = {}
    for name, cli in (("validate", ["validate", str(recipe)]), ("plan", ["plan", "--json", str(recipe)])):
        seconds, heavy = min(in_process(cli) for _ in range(3))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "renderer", *cli], capture_output=True, check=True, cwd=REPO)
        wall = time.perf_counter() - start
        results[name] = {"in_process_s": round(seconds, 3), "cli_wall_s": round(wall, 3), "heavy_imports": heavy}
    jobs = len(json.loads(subprocess.run([sys.executable, "-m", "renderer", "plan", "--json", str(recipe)],
                                         capture_output=True, text=True, cwd=REPO).stdout)["jobs"])
    print(json.dumps({"jobs": jobs, **results}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
