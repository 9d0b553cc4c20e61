"""The fused GEGLU projection as a Triton kernel for Hopper GPUs: diffusers' GEGLU, `h * gelu(gate)` with
`[h, gate] = x @ W.T + b`, as one persistent GEMM over TMA descriptors that writes only the product.

The projection's weight rows are stored interleaved in groups of 64 (value rows, then the matching gate rows;
geglu.interleave_geglu), so one accumulator tile holds both halves of its output columns; they are split in
registers and only the product, half the projection's size, is written. diffusers (and Inductor, which leaves the
GEMM to cuBLAS) writes the whole projection and reads it back for the gate: 12.5% of `fast`'s UNet step on an H100
(benchmarks/README.md, "Ablation").

Numerics: float32 accumulation, the bias added before rounding the projection to the activation dtype, as cuBLAS
does; then gelu (erf form) and the product in float32, rounded once. Its erf is Abramowitz & Stegun 7.1.26 (within
1.5e-7, as close to exact gelu as float32 erf is): it moves 0.075% of fp16 outputs by one unit against libdevice's
erf and makes the kernel 5-14% faster. Import only where Triton and a CUDA device exist (geglu.triton_unavailable()).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Chosen on an H200 (triton_candidates.py, benchmarks/README.md): within 3% of the best configuration on every
# SVD-XT shape.
_GEGLU_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)


@triton.jit
def _tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    # Grouped order: GROUP_M row tiles in a row reuse each weight tile while it is in L2.
    per_group = GROUP_M * num_pid_n
    first_m = (tile_id // per_group) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)
    return first_m + (tile_id % group_m), (tile_id % per_group) // group_m


@triton.jit
def _one_plus_erf_as(g):
    # 1 + erf(g / sqrt(2)) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), on the SM's special-function units:
    # one approximate reciprocal and one exp2 where libdevice's erff spends ~20 float32 instructions. For g < 0 it
    # is q = poly(t) * exp(-z^2) itself, with no cancellation; for g >= 0, 2 - q.
    z = tl.abs(g) * 0.7071067811865476
    t = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [1.0 + 0.3275911 * z], dtype=tl.float32,
                                  is_pure=True, pack=1)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    q = poly * tl.exp2(z * z * -1.4426950408889634)
    return tl.where(g >= 0, 2.0 - q, q)


@triton.jit
def _geglu_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, G: tl.constexpr, NUM_SMS: tl.constexpr,
                  GELU: tl.constexpr):
    dtype = out_ptr.dtype.element_ty
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[2 * N, K], strides=[K, 1], block_shape=[2 * BLOCK_N, BLOCK_K])
    out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS, flatten=True):
        pid_m, pid_n = _tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            acc = tl.dot(x_desc.load([off_m, ki * BLOCK_K]), w_desc.load([2 * off_n, ki * BLOCK_K]).T, acc)
        cols = 2 * off_n + tl.arange(0, 2 * BLOCK_N)
        acc += tl.load(b_ptr + cols, mask=cols < 2 * N, other=0.0).to(tl.float32)[None, :]
        acc = acc.to(dtype).to(tl.float32)
        # Columns come as [value 0:G, gate 0:G, value G:2G, gate G:2G, ...]: pair them up, then split.
        acc = tl.reshape(acc, (BLOCK_M, BLOCK_N // G, 2, G))
        h, g = tl.split(tl.reshape(tl.permute(acc, (0, 1, 3, 2)), (BLOCK_M, BLOCK_N, 2)))
        if GELU == "as":
            one_plus = _one_plus_erf_as(g)
        else:
            one_plus = 1.0 + tl.erf(g * 0.7071067811865476)
        out = h * (0.5 * g * one_plus)
        out_desc.store([off_m, off_n], out.to(dtype))


_SMS: dict[int, int] = {}


def _alloc(size: int, alignment: int, stream):
    # Global scratch for the kernels' device-side TMA descriptors (from torch's allocator, so graph capture works).
    return torch.empty(size, device="cuda", dtype=torch.int8)


def _num_sms(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
        triton.set_allocator(_alloc)
    return _SMS[index]


def geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, group: int, config: dict | None = None,
          gelu: str = "as") -> torch.Tensor:
    """x [M, K] contiguous; weight [2N, K] and bias [2N] interleaved in groups of `group` rows → [M, N].
    `config` (tile sizes, warps, stages) replaces the measured default and `gelu` ("erf": libdevice's, "as") the
    erf, for benchmarks."""
    m, k = x.shape
    n = weight.shape[0] // 2
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    sms = _num_sms(x.device)
    cfg = config or _GEGLU_CONFIG
    grid = (min(sms, triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"])),)
    _geglu_kernel[grid](x, weight, bias, out, m, n, k, G=group, NUM_SMS=sms, GELU=gelu, **cfg)
    return out
