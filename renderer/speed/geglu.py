"""diffusers' GEGLU as one fused Triton GEMM (renderer/speed/geglu_kernel.py), behind its self-check: the only
hand-written kernel `fast` keeps, because it beat the library's path (cuBLAS GEMM, Inductor's pointwise kernel) by
12.5% of the UNet step in the ablation (benchmarks/README.md)."""

from __future__ import annotations

import functools
import importlib.util

import torch

from renderer.speed.rewrites import replace_children

GEGLU_GROUP = 64  # rows of value, then of gate, in FusedGEGLU's interleaved projection


def interleave_geglu(weight: torch.Tensor, bias: torch.Tensor | None):
    """A GEGLU projection's [value; gate] rows (and bias) reordered as groups of GEGLU_GROUP value rows, each followed
    by the matching gate rows. A missing bias becomes zeros."""
    n2, k = weight.shape
    if bias is None:
        bias = weight.new_zeros(n2)
    w = weight.reshape(2, n2 // (2 * GEGLU_GROUP), GEGLU_GROUP, k).transpose(0, 1)
    b = bias.reshape(2, n2 // (2 * GEGLU_GROUP), GEGLU_GROUP).transpose(0, 1)
    return w.reshape(n2, k).contiguous(), b.reshape(n2).contiguous()


@functools.cache
def _register_op() -> None:
    """torch.ops.svdrender.geglu: the kernel as an op opaque to torch.compile (Inductor calls it as an extern kernel,
    on contiguous inputs), registered when the first FusedGEGLU is made rather than at import."""

    @torch.library.custom_op("svdrender::geglu", mutates_args=())
    def geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        from renderer.speed import geglu_kernel

        return geglu_kernel.geglu(x, weight, bias, GEGLU_GROUP)

    @geglu.register_fake
    def _(x, weight, bias):
        return x.new_empty((x.shape[0], weight.shape[0] // 2))


class FusedGEGLU(torch.nn.Module):
    """diffusers' GEGLU (`h * gelu(gate)`, `[h, gate] = proj(x)`) as one Triton GEMM that writes only the product.

    The projection's weight is stored interleaved (interleave_geglu), replacing the original, so no memory
    is added. Same function; the product is rounded once where diffusers rounds gelu(gate) and the product
    separately. Inputs other than fp16/bf16 on CUDA take the same interleaved weights through torch.
    """

    def __init__(self, geglu: torch.nn.Module):
        super().__init__()
        weight, bias = interleave_geglu(geglu.proj.weight.detach(), geglu.proj.bias)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias.detach(), requires_grad=False)
        _register_op()

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            out = torch.ops.svdrender.geglu(x.contiguous(), self.weight, self.bias)
        else:
            pairs = torch.nn.functional.linear(x, self.weight, self.bias).unflatten(-1, (-1, 2, GEGLU_GROUP))
            out = (pairs[:, :, 0] * torch.nn.functional.gelu(pairs[:, :, 1])).flatten(1)
        return out.reshape(*shape[:-1], out.shape[-1])


def fused_geglus(module: torch.nn.Module) -> int:
    """Replace every diffusers GEGLU under `module` whose sizes suit the kernel with FusedGEGLU; returns how many."""
    from diffusers.models.activations import GEGLU

    def wanted(child, parent):
        return (type(child) is GEGLU and child.proj.in_features % 8 == 0
                and child.proj.out_features % (2 * GEGLU_GROUP) == 0)

    return replace_children(module, wanted, FusedGEGLU)


def triton_unavailable() -> str | None:
    """Why renderer/speed/geglu_kernel.py cannot run here, or None when it can (CUDA, Hopper or newer, Triton)."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability(0) < (9, 0):
        return "needs TMA (compute capability 9.0 or newer)"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    return None


def check_kernel(device: str = "cuda") -> str | None:
    """Run the kernel once on small random inputs against diffusers' GEGLU; None when they agree, else what went
    wrong. A Triton or driver that cannot build it (an older Triton without tensor descriptors, say) is found here,
    at load, instead of in the middle of a batch."""
    from diffusers.models.activations import GEGLU

    try:
        with torch.no_grad():
            gen = torch.Generator(device).manual_seed(0)
            geglu = GEGLU(64, 128).to(device, torch.float16)
            x = torch.randn(300, 64, device=device, dtype=torch.float16, generator=gen)
            if not torch.allclose(FusedGEGLU(geglu)(x).float(), geglu(x).float(), atol=2e-2, rtol=2e-2):
                return "the fused GEGLU kernel disagrees with diffusers' GEGLU"
    except Exception as exc:  # any failure to build or run the kernel means: do not use it
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None
