"""SVD-XT's temporal self-attention (25-frame sequences): PyTorch's memory-efficient SDPA kernel against
renderer/triton_kernels.py's short-sequence kernel, on each UNet level's shape, as the step calls them.

SDPA starts from the [2·P, 25, heads·64] projections diffusers' temporal blocks make (sequence-major) and ends in
that layout, through [2·P, heads, 25, 64] views, as `EfficientShortAttnProcessor` hands them over. The Triton
kernel runs on the same sequence-major tensors and on the frame-major [2·25, P, heads·64] projections that
`FrameMajorTemporalBlock` makes (a sequence's frames P rows apart), writing frame-major output. Prints ms per call
(median of 20, CUDA events), the step's total weighted by calls, and the max abs difference against SDPA.
Exit status 0 when the frame-major Triton kernel's step total (1 warp, the default) is lower than SDPA's, 3 when
not.

    python benchmarks/short_attention.py --json short_attention.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from gpu_explore import Timer  # noqa: E402

# (latent positions, channels, heads, calls a step); each call has the CFG pair's 2 × positions sequences.
SHAPES = [(9216, 320, 5, 5), (2304, 640, 10, 5), (576, 1280, 20, 5), (144, 1280, 20, 1)]
FRAMES = 25


def timed(fn) -> float:
    """ms a call: median of 20 after 3 warm-up calls, CUDA events."""
    return Timer(torch.device("cuda"))(fn, warmup=3, iters=20)[0] * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--warps", default="1,2,4")
    args = p.parse_args(argv)
    from renderer import performance, triton_kernels

    g = torch.Generator("cuda").manual_seed(0)
    rows, totals = [], {}
    for positions, c, heads, calls in SHAPES:
        s, d = 2 * positions, c // heads
        q, k, v = (torch.randn(s, FRAMES, c, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))
        # The same values frame-major: [2, 25, P, C] memory, seen as [2, P, 25, C].
        fq, fk, fv = (t.view(2, positions, FRAMES, c).transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))

        def sdpa():
            views = (t.view(s, FRAMES, heads, d).transpose(1, 2) for t in (q, k, v))
            out = torch.ops.aten._scaled_dot_product_efficient_attention(*views, None, False)[0]
            return out.transpose(1, 2).reshape(s, FRAMES, c)

        ref = sdpa().float()
        variants = {"sdpa_efficient": sdpa}
        for w in map(int, args.warps.split(",")):
            variants[f"triton_w{w}"] = lambda w=w: triton_kernels.short_attention(
                q[None], k[None], v[None], heads, num_warps=w)[0]
            variants[f"triton_frame_major_w{w}"] = lambda w=w: triton_kernels.short_attention(
                fq, fk, fv, heads, out=performance._attention_output(fq), num_warps=w)
        row = {"positions": positions, "channels": c, "heads": heads, "calls": calls,
               "ideal_ms_at_4tbs": round(4 * q.numel() * 2 / 4e12 * 1e3, 4)}
        for name, fn in variants.items():
            row[f"{name}_ms"] = round(timed(fn), 4)
            row[f"{name}_max_abs"] = (fn().reshape(s, FRAMES, c).float() - ref).abs().max().item()
            totals[name] = totals.get(name, 0.0) + calls * row[f"{name}_ms"]
        rows.append(row)
        print(row, flush=True)
    totals = {k: round(v, 3) for k, v in totals.items()}
    print("per step (ms):", totals)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shapes": rows,
                   "step_ms": totals}, f, indent=1)
    return 0 if totals["triton_frame_major_w1"] < totals["sdpa_efficient"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
