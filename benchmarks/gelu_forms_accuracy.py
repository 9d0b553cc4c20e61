"""How far each gelu form the GEGLU kernel can use is from exact gelu, over every fp16 input in (-12, 12) (CPU, 1 s).

The forms are written here in float64 torch as renderer/triton_kernels.py computes them, to show the formulas'
own error (the kernel's approximate reciprocal and exp2 add float32-level error; triton_candidates.py measures the
kernel itself on the GPU). "fp16 moved" is the share of inputs whose gelu, rounded to fp16, differs from exact
gelu's.

    python benchmarks/gelu_forms_accuracy.py
"""

import math

import torch


def one_plus_erf_as(g: torch.Tensor) -> torch.Tensor:
    # Abramowitz & Stegun 7.1.26, as renderer.triton_kernels._one_plus_erf_as computes it.
    z = g.abs() / math.sqrt(2)
    t = 1 / (1 + 0.3275911 * z)
    q = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    q = q * torch.exp(-z * z)
    return torch.where(g >= 0, 2 - q, q)


def main() -> int:
    g = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16).double()
    g = g[torch.isfinite(g) & (g.abs() < 12)]
    exact = 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))
    g32 = g.float()
    forms = {
        "float32 torch.erf": (0.5 * g32 * (1 + torch.erf(g32 * 0.7071067811865476))).double(),
        "A&S 7.1.26": 0.5 * g * one_plus_erf_as(g),
        "tanh form": 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))),
    }
    print(f"{'form':20s} {'max abs error':>14s} {'fp16 moved':>11s}")
    for name, value in forms.items():
        moved = (value.half() != exact.half()).double().mean().item()
        print(f"{name:20s} {(value - exact).abs().max().item():14.2e} {moved:10.3%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
