"""Print sampler accuracy per preset and step count, measured on latents with an exactly known distribution.

Usage: HF_HUB_OFFLINE=1 python benchmarks/sampler_accuracy.py [--steps 5,10,15,25,50] [--size 128]

Each cell is the Wasserstein-1 distance (W1) between the latents the real SVD pipeline samples with that preset and
the target Gaussian mixture, using the exact denoiser in place of the UNet (tests/accuracy_mixture.py); lower is
better, 0 is a perfect sampler. Steps equal UNet calls for every built-in preset. The refused schedulers are run at
25 steps the way popular advice builds them. The output is the table in docs/schedulers.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="5,10,15,25,50", help="comma-separated step counts")
    parser.add_argument("--size", type=int, default=128, help="image size; latents are size/4 square × 8 frames × 4")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    import diffusers
    import torch

    torch.set_num_threads(1)  # tiny tensors: more threads only add synchronisation

    from renderer import schedulers
    from renderer.tiny import SVD_SCHEDULER_CONFIG

    diffusers.utils.logging.set_verbosity_error()
    accuracy = _load("accuracy_mixture", ROOT / "tests" / "accuracy_mixture.py")
    tests = _load("test_sampler_accuracy", ROOT / "tests" / "test_sampler_accuracy.py")
    started = time.perf_counter()

    for label, mixture in (("target 1 (the test's)", accuracy.MIXTURE), ("target 2", accuracy.SECOND_MIXTURE)):
        bench = accuracy.SamplerBench(mixture, size=args.size)
        print(f"\n## W1 error by UNet calls, {label}: {mixture}\n")
        print("| preset | " + " | ".join(str(n) for n in steps) + " |")
        print("|---|" + "---:|" * len(steps))
        for name in schedulers.PRESETS:
            cells = []
            for n in steps:
                scheduler, kwargs = schedulers.build({"scheduler": name, "num_inference_steps": n},
                                                     SVD_SCHEDULER_CONFIG)
                cells.append(f"{bench.error(scheduler, kwargs):.4f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("| tolerance 2.5/N | " + " | ".join(f"{tests.tolerance(n):.4f}" for n in steps) + " |")

        print(f"\nRefused schedulers at 25 steps, {label}:\n")
        print("| refused name | W1 at 25 steps |")
        print("|---|---:|")
        for name, (_, make) in tests.REFUSED_BUILDS.items():
            try:
                result = f"{bench.error(make(diffusers.schedulers), {'num_inference_steps': 25}):.4f}"
            except Exception as error:  # a crash is a result here
                result = f"crash ({type(error).__name__})"
            print(f"| {name} | {result} |")

    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
