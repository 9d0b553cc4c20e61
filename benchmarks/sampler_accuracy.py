"""Print sampler accuracy per preset and step count, measured on latents with an exactly known distribution.

Usage: HF_HUB_OFFLINE=1 python benchmarks/sampler_accuracy.py [--steps 5,10,15,25,50] [--size 128] [--write]
       [--markdown]

Part 1 (the pipeline tables): each cell is the Wasserstein-1 distance (W1) between the latents the real SVD pipeline
samples with that preset and a 1-D Gaussian mixture, using the exact denoiser in place of the UNet
(tests/accuracy_mixture.py); lower is better, 0 is a perfect sampler. Steps equal UNet calls for every built-in
preset. The refused schedulers are run at 25 steps the way popular advice builds them.

Part 2 (the ladder): the sliced Wasserstein error on the 1-D, 2-D and 4-D mixtures (full, unequal covariances;
float64; median of 3 seeds) of the ladder presets and the candidates they were chosen from, relative to Euler at 25
calls (SVD's default). `--write` stores it in renderer/preset_accuracy.json (what `svdrender presets` shows);
`--markdown` rewrites the generated table in docs/schedulers.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
    parser.add_argument("--write", action="store_true", help="store the ladder's accuracy in renderer/preset_accuracy.json")
    parser.add_argument("--markdown", action="store_true", help="rewrite the generated table in docs/schedulers.md")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    import diffusers
    import torch

    torch.set_num_threads(1)  # tiny tensors: more threads only add synchronisation

    from renderer import scheduler_presets
    from renderer.builtin_models import SVD_SCHEDULER_CONFIG

    diffusers.utils.logging.set_verbosity_error()
    accuracy = _load("accuracy_mixture", ROOT / "tests" / "accuracy_mixture.py")
    tests = _load("test_sampler_accuracy", ROOT / "tests" / "test_sampler_accuracy.py")
    started = time.perf_counter()

    for label, mixture in (("target 1 (the test's)", accuracy.MIXTURE), ("target 2", accuracy.SECOND_MIXTURE)):
        bench = accuracy.SamplerBench(mixture, size=args.size)
        print(f"\n## W1 error by UNet calls, {label}: {mixture}\n")
        print("| preset | " + " | ".join(str(n) for n in steps) + " |")
        print("|---|" + "---:|" * len(steps))
        for name, group in _same_method(scheduler_presets, scheduler_presets.PRESETS).items():
            cells = []
            for n in steps:
                scheduler, kwargs = scheduler_presets.build({"scheduler": name, "num_inference_steps": n},
                                                     SVD_SCHEDULER_CONFIG)
                cells.append(f"{bench.error(scheduler, kwargs):.4f}")
            print(f"| {', '.join(group)} | " + " | ".join(cells) + " |")
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

    ladder = measure_ladder(accuracy, scheduler_presets)
    print("\n" + ladder_markdown(ladder))
    if args.write:
        scheduler_presets.PRESET_ACCURACY_FILE.write_text(json.dumps(ladder, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {scheduler_presets.PRESET_ACCURACY_FILE.relative_to(ROOT)}")
    if args.markdown:
        _replace_generated(ROOT / "docs" / "schedulers.md", ladder_markdown(ladder))
        print("wrote docs/schedulers.md")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


# Candidates the ladder was chosen from, at the ladder's budgets: (label, recipe preset without the step count, and
# IPNDMScheduler arguments that are not recipe options).
CANDIDATES = (
    ("iPNDM order 3 + corrector, AYS σ ending at σ_min (quick, fine)", {"scheduler": "quick"}, {}),
    ("iPNDM order 4 + corrector, AYS σ ending at σ_min", {"scheduler": "quick"}, {"max_order": 4}),
    ("iPNDM order 3, AYS σ ending at σ_min", {"scheduler": "quick"}, {"corrector": False}),
    ("iPNDM order 4, AYS σ ending at σ_min", {"scheduler": "quick"}, {"max_order": 4, "corrector": False}),
    ("iPNDM order 3, AYS σ ending at 0", {"scheduler": "quick", "sigmas": "ays"}, {"corrector": False}),
    ("DPM++ 2M, AYS σ spaced for n + ½ steps (draft)", {"scheduler": "draft"}, {}),
    ("DPM++ 2M, AYS σ (dpmpp_2m_ays)", {"scheduler": "dpmpp_2m_ays"}, {}),
    ("DPM++ 2M, Karras σ (dpmpp_2m_karras)", {"scheduler": "dpmpp_2m_karras"}, {}),
    ("Euler, Karras σ (euler)", {"scheduler": "euler"}, {}),
)
BUDGETS = (6, 8, 10)
CONVERGENCE_STEPS = (3, 4, 6, 8, 10, 15, 25, 35, 50)


def measure_ladder(accuracy, scheduler_presets) -> dict:
    """Errors of the ladder and its candidates relative to Euler at 25 calls, as stored in preset_accuracy.json."""
    from renderer.samplers import IPNDMScheduler
    from renderer.builtin_models import SVD_SCHEDULER_CONFIG

    tests = accuracy.MIXTURES
    reference = {name: accuracy.preset_nd_error(accuracy.REFERENCE, mixture) for name, mixture in tests.items()}

    def relative(spec: dict, steps: int, class_options: dict | None = None) -> dict:
        spec = {**spec, "num_inference_steps": steps}
        if not class_options:
            return {name: round(accuracy.preset_nd_error(spec, m) / reference[name], 3) for name, m in tests.items()}
        resolved = scheduler_presets.resolve(spec)

        # Arguments a recipe cannot set: build the class directly, on the preset's σ.
        def make():
            options = {**dict(resolved.options), **class_options, "sigma_data": 1.0}
            return IPNDMScheduler.from_config(SVD_SCHEDULER_CONFIG, **options), resolved.call_kwargs()

        return {name: round(accuracy.nd_error(make, m) / reference[name], 3) for name, m in tests.items()}

    presets = {name: {"calls": scheduler_presets.unet_calls(name),
                      "relative_error": relative({"scheduler": name}, scheduler_presets.PRESETS[name].default_steps)}
               for name in scheduler_presets.LADDER}
    convergence = {}
    for name in _same_method(scheduler_presets, scheduler_presets.LADDER):
        low, high = scheduler_presets.PRESETS[name].step_range
        steps = [n for n in CONVERGENCE_STEPS if low <= n <= high]
        convergence[name] = {"range": [low, high], "steps": steps,
                             "relative_error": [relative({"scheduler": name}, n) for n in steps]}
    return {
        "command": "python benchmarks/sampler_accuracy.py --write --markdown",
        "measure": (f"sliced Wasserstein distance to the exact mixture, {accuracy.SAMPLES} samples, "
                    f"{accuracy.DIRECTIONS} directions, float64, median of 3 seeds, relative to euler at 25 calls"),
        "reference": {"preset": "euler", "calls": 25, "error": {k: round(v, 5) for k, v in reference.items()}},
        "presets": presets,
        "candidates": [{"label": label, "calls": n, "relative_error": relative(spec, n, options)}
                       for n in BUDGETS for label, spec, options in CANDIDATES],
        "ladder_steps": convergence,
    }


def _same_method(scheduler_presets, names) -> dict[str, list[str]]:
    """Presets grouped by method and schedule (they differ only in their default step count), first name → all."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        p = scheduler_presets.PRESETS[name]
        groups.setdefault((p.scheduler_class, tuple(p.scheduler_options.items()), p.sigmas), []).append(name)
    return {group[0]: group for group in groups.values()}


def ladder_markdown(ladder: dict) -> str:
    """The generated tables of docs/schedulers.md."""
    tests = list(ladder["reference"]["error"])
    head = "| " + " | ".join(tests) + " |"
    lines = ["| preset | UNet calls | " + head[2:], "|---|---:|" + "---:|" * len(tests)]
    ref = ladder["reference"]
    lines.append(f"| euler (reference, absolute error) | {ref['calls']} | "
                 + " | ".join(f"{ref['error'][t]:.4f}" for t in tests) + " |")
    for name, p in ladder["presets"].items():
        lines.append(f"| **{name}** | {p['calls']} | " + " | ".join(f"{p['relative_error'][t]:.2f}" for t in tests)
                     + " |")
    lines += ["", "Candidates at each budget (error relative to euler at 25 calls; lower is better):", "",
              "| method on σ schedule | UNet calls | " + head[2:], "|---|---:|" + "---:|" * len(tests)]
    for c in ladder["candidates"]:
        lines.append(f"| {c['label']} | {c['calls']} | " + " | ".join(f"{c['relative_error'][t]:.2f}" for t in tests)
                     + " |")
    for name, method in ladder["ladder_steps"].items():
        low, high = method["range"]
        lines += ["", f"`{name}`'s method over the step counts it accepts ({low}–{high}), error relative to euler at 25 "
                  "calls:", "", "| steps | " + head[2:], "|---:|" + "---:|" * len(tests)]
        for n, row in zip(method["steps"], method["relative_error"]):
            lines.append(f"| {n} | " + " | ".join(f"{row[t]:.3f}" for t in tests) + " |")
    return "\n".join(lines)


BEGIN = "<!-- generated by benchmarks/sampler_accuracy.py --markdown: do not edit by hand -->"
END = "<!-- end of generated table -->"


def _replace_generated(path: pathlib.Path, table: str) -> None:
    text = path.read_text()
    before, _, rest = text.partition(BEGIN)
    _, found, after = rest.partition(END)
    if not found:
        raise SystemExit(f"{path}: no '{BEGIN}' … '{END}' block to rewrite")
    path.write_text(f"{before}{BEGIN}\n{table}\n{END}{after}")


if __name__ == "__main__":
    sys.exit(main())
