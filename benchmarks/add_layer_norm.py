"""SVD-XT's residual add + layer norm: the same function compiled by Inductor alone, and renderer/triton_kernels.py's
one-pass kernel in several configurations, on each UNet level's shape, with the broadcast row (the cross-attention
output per frame) that the spatial blocks add. Prints ms per call (median of 20, CUDA events), GB/s of the bytes
that must move (x, residual read; sum, normed written), and the max abs difference against eager torch.

Inside the compiled UNet, Inductor fuses these adds into its layer norms, but generates most of them as two-pass
loops (0.56-0.71 ms a call at 320 channels in the step's profile, docs/performance.md); compiled alone the graph
is simpler, so the Inductor column is what Inductor does at best, not what it does in the UNet.

    python benchmarks/add_layer_norm.py --json add_layer_norm.json
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

# (latent positions, channels); rows = 2 (CFG) x 25 frames x positions.
SHAPES = [(9216, 320), (2304, 640), (576, 1280), (144, 1280)]
FRAMES = 25
CONFIGS = {  # name -> (rows a program, warps) ; None: the kernel's default for the width
    "default": None,
    "rows_x2": (2, None),
    "rows_half": (0.5, None),
    "warps_x2": (1, 2),
    "warps_half": (1, 0.5),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    from renderer import triton_kernels

    g = torch.Generator("cuda").manual_seed(0)
    rows_out = []
    for positions, c in SHAPES:
        m = 2 * FRAMES * positions
        x, r = (torch.randn(m, c, device="cuda", dtype=torch.float16, generator=g) for _ in "xr")
        cross = torch.randn(2 * FRAMES, c, device="cuda", dtype=torch.float16, generator=g)
        norm = torch.nn.LayerNorm(c).to("cuda", torch.float16)
        with torch.no_grad():
            torch.nn.init.normal_(norm.weight, generator=g)
            torch.nn.init.normal_(norm.bias, generator=g)

        def eager(x, r, cross):
            s = ((x + r).view(-1, positions, c) + cross.view(-1, 1, c)).view(m, c)
            return s, torch.nn.functional.layer_norm(s, (c,), norm.weight, norm.bias, norm.eps)

        with torch.no_grad():
            ref = eager(x, r, cross)
            compiled = torch.compile(eager, fullgraph=True, dynamic=False)
            variants = {"inductor_alone": lambda: compiled(x, r, cross)}
            base = triton_kernels._add_layer_norm_config(c)
            for name, change in CONFIGS.items():
                cfg = dict(base)
                if change is not None:
                    rows, warps = change
                    cfg["BLOCK_M"] = max(1, int(base["BLOCK_M"] * rows))
                    cfg["num_warps"] = max(1, int(base["num_warps"] * (warps or 1)))
                variants[f"triton_{name}"] = lambda cfg=cfg: triton_kernels.add_layer_norm(
                    x, r, norm.weight, norm.bias, norm.eps, cross, positions, 1, config=cfg)
            moved = 4 * m * c * 2
            row = {"rows": m, "channels": c, "ideal_ms_at_4tbs": round(moved / 4e12 * 1e3, 4)}
            for name, fn in variants.items():
                ms = Timer(torch.device("cuda"))(fn, warmup=3, iters=20)[0] * 1e3
                out = fn()
                row[f"{name}_ms"] = round(ms, 4)
                row[f"{name}_gbs"] = round(moved / ms / 1e6)
                row[f"{name}_max_abs"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(out, ref))
        rows_out.append(row)
        print(row, flush=True)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shapes": rows_out}, f,
                  indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
