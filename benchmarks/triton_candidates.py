"""renderer/triton_kernels.py's two kernels against what the compiled step runs instead, per SVD-XT shape and per
kernel configuration: the fused GEGLU against cuBLAS's projection alone and torch.compile's projection + fused
pointwise; the temporal (3,1,1) convolution against cuDNN in the same layout. Each is checked against float32 torch
on the same inputs (relative L2 error).

    python benchmarks/triton_candidates.py --json candidates.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from gpu_explore import Timer, diff  # noqa: E402

# (tokens, in, out) of the 15 + 15 + 15 + 3 GEGLUs of a step, and (B, C, frames, positions, calls) of the temporal
# convolutions: a UNet step's four, then one video decode's three (VAE decoder, chunks of 8 frames).
GEGLU_SHAPES = ((460800, 320, 1280, 15), (115200, 640, 2560, 15), (28800, 1280, 5120, 15), (7200, 1280, 5120, 3))
CONV_SHAPES = ((2, 320, 25, 9216, 10), (2, 640, 25, 2304, 10), (2, 1280, 25, 576, 10), (2, 1280, 25, 144, 14),
               (1, 128, 8, 589824, 18), (1, 256, 8, 147456, 18), (1, 512, 8, 36864, 18))
GEGLU_CONFIGS = [dict(BLOCK_M=128, BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, num_warps=w, num_stages=s)
                 for bn, w, s in ((128, 8, 3), (64, 8, 4), (64, 4, 4))]
CONV_CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, num_warps=w, num_stages=s)
                for bm, bn, w, s in ((128, 128, 4, 4), (128, 128, 8, 4), (128, 256, 8, 3), (128, 64, 4, 5))]


def sweep(row, configs, fn, exact, flop, timer, iters):
    for i, cfg in enumerate(configs):
        try:
            t, out = timer(lambda: fn(cfg), warmup=2, iters=iters)
            row[f"cfg{i}_ms"] = round(t * 1e3, 3)
            row[f"cfg{i}_tflops"] = round(flop / t / 1e12, 1)
            row[f"cfg{i}_rel_l2"] = round(diff(out, exact)["rel_l2"], 6)
        except Exception as exc:  # a configuration that does not build is a result
            row[f"cfg{i}_error"] = repr(exc)[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--kernels", default="geglu,conv", help="comma-separated: geglu, conv")
    p.add_argument("--configs", choices=("all", "default"), default="all",
                   help="default: only the configuration the renderer uses")
    args = p.parse_args(argv)

    import triton

    from renderer import performance, triton_kernels

    device, dtype = torch.device("cuda"), torch.float16
    timer = Timer(device)
    results: dict = {"versions": {"torch": torch.__version__, "triton": triton.__version__},
                     "configs": {"geglu": GEGLU_CONFIGS, "conv": CONV_CONFIGS}, "geglu": [], "conv": []}
    t0 = time.perf_counter()

    def save(kind, row):
        results[kind].append(row)
        results["elapsed_s"] = round(time.perf_counter() - t0, 1)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(kind, row, flush=True)

    def geglu_reference(x, w, b):
        h, gate = F.linear(x, w, b).chunk(2, dim=-1)
        return h * F.gelu(gate)

    compiled = torch.compile(geglu_reference, dynamic=False)
    torch.manual_seed(0)
    kernels = args.kernels.split(",")
    geglu_configs = GEGLU_CONFIGS if args.configs == "all" else GEGLU_CONFIGS[:1]
    conv_configs = CONV_CONFIGS if args.configs == "all" else CONV_CONFIGS[:1]
    with torch.inference_mode():
        for m, k, n, count in GEGLU_SHAPES if "geglu" in kernels else ():
            x = torch.randn(m, k, device=device, dtype=dtype)
            w = torch.randn(2 * n, k, device=device, dtype=dtype) / k**0.5
            b = torch.randn(2 * n, device=device, dtype=dtype) * 0.1
            exact = geglu_reference(x.float(), w.float(), b.float())
            row = {"m": m, "k": k, "n": n, "count": count}
            row["cublas_projection_only_ms"] = round(timer(lambda: F.linear(x, w, b), 2, args.iters)[0] * 1e3, 3)
            t, out = timer(lambda: compiled(x, w, b), warmup=2, iters=args.iters)
            row["compiled_ms"], row["compiled_rel_l2"] = round(t * 1e3, 3), round(diff(out, exact)["rel_l2"], 6)
            wi, bi = performance.interleave_geglu(w, b)
            sweep(row, geglu_configs, lambda cfg: triton_kernels.geglu(x, wi, bi, performance.GEGLU_GROUP, cfg),
                  exact, 4.0 * m * k * n, timer, args.iters)
            # The erf in the epilogue: libdevice's, Abramowitz & Stegun 7.1.26 on the special-function units, and
            # gelu's tanh form; each against the libdevice kernel's own output (how many fp16 outputs move).
            libdevice = triton_kernels.geglu(x, wi, bi, performance.GEGLU_GROUP, gelu="erf")
            for form in ("erf", "as", "tanh"):
                t, out = timer(lambda: triton_kernels.geglu(x, wi, bi, performance.GEGLU_GROUP, gelu=form),
                               warmup=2, iters=args.iters)
                moved = out != libdevice
                row[f"gelu_{form}"] = {"ms": round(t * 1e3, 3), "rel_l2": round(diff(out, exact)["rel_l2"], 7),
                                       "max_abs_vs_libdevice": (out.float() - libdevice.float()).abs().max().item(),
                                       "moved_pct": round(moved.float().mean().item() * 100, 4)}
            save("geglu", row)

        for bsz, c, f, pos, count in CONV_SHAPES if "conv" in kernels else ():
            x = torch.randn(bsz, c, f, pos, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(c, c, 3, 1, device=device, dtype=dtype) / (3 * c) ** 0.5
            b = torch.randn(c, device=device, dtype=dtype) * 0.1
            exact = F.conv2d(x.float(), w.float(), b.float(), padding=(1, 0))
            flop = 6.0 * bsz * c * f * pos * c
            row = {"x": [bsz, c, f, pos], "count": count}
            for layout, fmt in (("channels_last", torch.channels_last), ("nchw", torch.contiguous_format)):
                xx, ww = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
                t, out = timer(lambda: F.conv2d(xx, ww, b, padding=(1, 0)), warmup=2, iters=args.iters)
                row[f"cudnn_{layout}_ms"], row[f"cudnn_{layout}_tflops"] = round(t * 1e3, 3), round(flop / t / 1e12, 1)
            rows_in = x.permute(0, 2, 3, 1).reshape(bsz, f * pos, c)  # channels-last memory: already contiguous
            taps = w[..., 0].permute(2, 0, 1).reshape(3 * c, c).contiguous()
            exact_rows = exact.permute(0, 2, 3, 1).reshape(bsz, f * pos, c)
            sweep(row, conv_configs, lambda cfg: triton_kernels.temporal_conv(rows_in, taps, b, pos, cfg),
                  exact_rows, flop, timer, args.iters)
            save("conv", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
