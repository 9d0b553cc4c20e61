"""Where one `fast` job's GPU time goes: the UNet step as `fast` replays it, and the VAE decode, kernel by kernel.

Builds the full-size SVD-XT pipeline with random weights and `fast`'s settings (compiled UNet replayed as CUDA
graphs, compiled VAE decoder, renderer/triton_kernels.py), warms both up, then times and profiles (torch.profiler)
one UNet call on a CFG batch and one decode of 25 latent frames in chunks of 8, as the engine calls them. Prints
and writes per-family totals and the top kernels. Compiling fills --compile-cache-dir, which a later
gpu_throughput.py run on the same cache then finds warm.

    python benchmarks/job_profile.py --compile-cache-dir /tmp/svdr-cache --json job_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--compile-cache-dir", default=None)
    p.add_argument("--rows", type=int, default=60, help="top kernels kept per profile")
    args = p.parse_args(argv)

    from gpu_explore import Timer, kernel_breakdown
    from gpu_throughput import fast_unet_on_gpu

    t0 = time.perf_counter()
    pipe, applied, (sample, t, emb, time_ids) = fast_unet_on_gpu(compile_cache_dir=args.compile_cache_dir)
    device = torch.device("cuda")
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "applied": applied["applied"], "skipped": applied["skipped"]}

    def step():
        return pipe.unet(sample, t, encoder_hidden_states=emb, added_time_ids=time_ids, return_dict=False)[0]

    g = torch.Generator(device).manual_seed(3)
    latents = torch.randn(1, 25, 4, 72, 128, generator=g, device=device, dtype=torch.float16)

    def decode():
        return pipe.decode_latents(latents, 25, 8)

    with torch.inference_mode():
        for name, fn, iters in (("unet_step", step, 10), ("decode", decode, 3)):
            w = time.perf_counter()
            for _ in range(3):  # compile, capture, replay
                fn()
            torch.cuda.synchronize()
            warm_s = time.perf_counter() - w
            ms = Timer(device)(fn, warmup=0, iters=iters)[0] * 1e3
            results[name] = {"ms": round(ms, 2), "warmup_s": round(warm_s, 1),
                             "profile": kernel_breakdown(fn, device, rows=args.rows)}
            print(name, {"ms": results[name]["ms"], "warmup_s": results[name]["warmup_s"],
                         "families_s": results[name]["profile"].get("families_s")}, flush=True)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    for name in ("unet_step", "decode"):
        print(f"-- {name} top kernels (s, calls, kernel)")
        for row in results[name]["profile"].get("top", [])[:30]:
            print(f"{row['s']:.5f} {row['count']:4d} {row['kernel']}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
