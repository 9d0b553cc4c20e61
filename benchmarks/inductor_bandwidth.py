"""The compiled `fast` UNet step's Inductor-generated kernels, one by one: time, bytes moved, bandwidth reached.

Everything a compiled step runs that is not cuBLAS, cuDNN or renderer/triton_kernels.py is an Inductor Triton
kernel (norms, pointwise, layout copies), memory-bound by nature. Inductor's own bandwidth profiler
(`torch._inductor.config.profile_bandwidth`) times each one alone on its real arguments; this script turns on
that profiler, compiles the UNet exactly as `optimize_pipeline` does for the `fast` profile (without CUDA graph
replay, which the profiler's timing loop cannot run inside), runs one step and writes per-kernel totals, sorted
by time, to --json. The generated code (which says each kernel's sizes) is copied next to it.

    python benchmarks/inductor_bandwidth.py --json bandwidth.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from collections import defaultdict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]


VARIANTS = {
    "default": {},
    # Inductor benchmarks block-size neighbours of each generated kernel's heuristic config at compile time.
    "coordinate_descent": {"coordinate_descent_tuning": True},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--variants", default="default", help=f"comma-separated Inductor settings: {', '.join(VARIANTS)}")
    p.add_argument("--budget-s", type=float, default=560.0, help="skip a variant that would start after this")
    p.add_argument("--peak-gbs", type=float, default=4800.0, help="the GPU's memory bandwidth, for the 'ideal' column")
    args = p.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.json))
    cache = "/tmp/svdr-bandwidth-inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache

    import torch._inductor.config as inductor_config

    from gpu_throughput import fast_unet_on_gpu

    t_start = time.perf_counter()
    pipe, applied, (sample, t, emb, time_ids) = fast_unet_on_gpu(cuda_graphs=False, compile_vae=False,
                                                                 compile_cache_dir=cache)
    unet = pipe.unet
    results: dict = {"applied": applied["applied"], "skipped": applied["skipped"], "variants": {}}

    for variant in args.variants.split(","):
        if results["variants"] and 2 * (time.perf_counter() - t_start) > args.budget_s:  # the next takes as long
            results["variants"][variant] = "skipped: not enough time left"
            continue
        raw = os.path.join(out_dir, f"inductor_bandwidth_{variant}.txt")
        t0 = time.perf_counter()
        torch._dynamo.reset()
        unet._compiled_call_impl = None
        # benchmark_harness off: with it, torch 2.11 calls the module's benchmark entry point wrongly at compile time.
        with inductor_config.patch(profile_bandwidth=True, profile_bandwidth_regex="", profile_bandwidth_output=raw,
                                   benchmark_harness=False, **VARIANTS[variant]):
            unet.compile(fullgraph=True, dynamic=False)
            with torch.inference_mode():
                unet(sample, t, encoder_hidden_states=emb, added_time_ids=time_ids, return_dict=False)
                torch.cuda.synchronize()
        results["variants"][variant] = summarize(raw, args.peak_gbs, time.perf_counter() - t0)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        summary = results["variants"][variant]
        print(variant, {k: v for k, v in summary.items() if k != "kernels"}, flush=True)
        for r in summary["kernels"][:30]:
            print(r)
        # The UNet's wrapper module (the newest large one) holds every kernel's source and sizes.
        paths = glob.glob(os.path.join(cache, "**", "*.py"), recursive=True)
        path = max(paths, key=lambda q: (os.path.getsize(q) > 1e6, os.path.getmtime(q)))
        shutil.copy(path, os.path.join(out_dir, f"inductor_{variant}_" + os.path.basename(path)))
    return 0


def summarize(raw: str, peak_gbs: float, seconds: float) -> dict:
    """Per-kernel totals from the profiler's file: one line per call ("0.123ms  0.295 GB  2400.00GB/s  1.23%  name")."""
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    with open(raw) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 6 and parts[0].endswith("ms") and parts[2] == "GB":
                row = per_kernel[parts[5]]
                row[0] += 1
                row[1] += float(parts[0].removesuffix("ms"))
                row[2] += float(parts[1])
    rows = [{"kernel": k, "calls": n, "ms": round(ms, 3), "gb": round(gb, 3),
             "gbs": round(gb / (ms / 1e3), 1) if ms else None, "ideal_ms": round(gb / peak_gbs * 1e3, 3)}
            for k, (n, ms, gb) in per_kernel.items()]
    rows.sort(key=lambda r: -r["ms"])
    total_gb = sum(r["gb"] for r in rows)
    return {"compile_and_profile_s": round(seconds, 1), "total_ms": round(sum(r["ms"] for r in rows), 2),
            "total_gb": round(total_gb, 2), "ideal_ms": round(total_gb / peak_gbs * 1e3, 2), "kernels": rows}


if __name__ == "__main__":
    raise SystemExit(main())
