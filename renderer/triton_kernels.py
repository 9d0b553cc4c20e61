"""Four Triton kernels for SVD on Hopper GPUs: two persistent GEMMs over TMA descriptors, a short-sequence attention
and a residual add with its layer norm. Import only where Triton and a CUDA device exist (performance.triton_unavailable() says whether they do).

* geglu: diffusers' GEGLU, `h * gelu(gate)` with `[h, gate] = x @ W.T + b`. The projection's weight rows are stored
  interleaved in groups of 64 (value rows, then the matching gate rows; performance.interleave_geglu), so one
  accumulator tile holds both halves of its output columns; they are split in registers and only the product, half
  the projection's size, is written. diffusers writes the whole projection and reads it back for the gate.
* temporal_conv: a (3, 1, 1) Conv3d over frames on channels-last activations [B, frames·positions, C], as one
  implicit GEMM: tap t reads the rows one frame (P positions) earlier or later, and TMA fills rows outside the clip
  with zeros, which is the convolution's zero padding. cuDNN runs SVD's temporal convolutions at 90–500 TFLOP/s.
* short_attention: softmax self-attention over SVD's 25-frame temporal sequences, one program per sequence and
  head, reading each head's columns of the projections where they are, at any strides: the temporal blocks keep
  their tokens frame-major ([B, frames, positions, C], performance.FrameMajorTemporalBlock), so a sequence is one
  position's 25 rows, a frame apart. SDPA's kernels want [sequences, heads, frames, D] copies.
* add_layer_norm: x + residual (+ a broadcast row), written, and its layer norm, reading each row once. Inductor
  fuses the same adds into its layer norms but generates most of them in the UNet as two-pass loops.

Numerics: float32 accumulation, the bias added before rounding to the activation dtype, as cuBLAS and cuDNN do;
GEGLU rounds the projection to that dtype, then computes gelu (erf form) and the product in float32 and rounds
once. Its erf is Abramowitz & Stegun 7.1.26 (within 1.5e-7, as close to exact gelu as float32 erf is): on an H200 it
moves 0.075% of fp16 outputs by one unit against libdevice's erf and makes the kernel 5–14% faster. Measured against
cuBLAS/cuDNN in benchmarks/triton_candidates.py (docs/performance.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Chosen on an H200 (benchmarks/triton_candidates.py): GEGLU's is within 3% of the best configuration on every SVD-XT
# shape; the convolution's is the best on all but one shape (10% behind there).
_GEGLU_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
_CONV_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4)


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
def _one_plus_tanh(g):
    # gelu's tanh form on the hardware tanh, for benchmarks only: up to 4.7e-4 from exact gelu, and 31% of the
    # kernel's fp16 outputs move against libdevice's erf.
    u = 0.7978845608028654 * (g + 0.044715 * g * g * g)
    return 1.0 + tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [u], dtype=tl.float32, is_pure=True,
                                           pack=1)


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
        elif GELU == "tanh":
            one_plus = _one_plus_tanh(g)
        else:
            one_plus = 1.0 + tl.erf(g * 0.7071067811865476)
        out = h * (0.5 * g * one_plus)
        out_desc.store([off_m, off_n], out.to(dtype))


@triton.jit
def _temporal_conv_kernel(x_ptr, w_ptr, b_ptr, out_ptr, B, R, P, CI, CO, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr):
    # x [B, R, CI] with R = frames·P; w [3·CO, CI], tap-major; out [B, R, CO].
    dtype = out_ptr.dtype.element_ty
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[B, R, CI], strides=[R * CI, CI, 1],
                                       block_shape=[1, BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[3 * CO, CI], strides=[CI, 1], block_shape=[BLOCK_N, BLOCK_K])
    o_desc = tl.make_tensor_descriptor(out_ptr, shape=[B, R, CO], strides=[R * CO, CO, 1],
                                       block_shape=[1, BLOCK_M, BLOCK_N])
    num_pid_m = tl.cdiv(R, BLOCK_M)
    num_pid_n = tl.cdiv(CO, BLOCK_N)
    per_b = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(CI, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), B * per_b, NUM_SMS, flatten=True):
        b = tile_id // per_b
        pid_m, pid_n = _tile(tile_id % per_b, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for i in range(3 * k_tiles):
            tap = i // k_tiles
            k = (i % k_tiles) * BLOCK_K
            # Rows before the first frame or after the last are out of bounds: TMA reads them as zeros.
            a = x_desc.load([b, off_m + (tap - 1) * P, k]).reshape(BLOCK_M, BLOCK_K)
            acc = tl.dot(a, w_desc.load([tap * CO + off_n, k]).T, acc)
        co = off_n + tl.arange(0, BLOCK_N)
        acc += tl.load(b_ptr + co, mask=co < CO, other=0.0).to(tl.float32)[None, :]
        o_desc.store([b, off_m, off_n], acc.to(dtype).reshape(1, BLOCK_M, BLOCK_N))


@triton.jit
def _short_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, F, sq_b, sq_p, sq_f, sk_b, sk_p, sk_f, sv_b, sv_p, sv_f,
                            so_b, so_p, so_f, scale_log2, D: tl.constexpr, BLOCK_F: tl.constexpr):
    # One (sequence, head) of [B, P, F, heads·D] at any strides: the F×F score matrix fits in registers, so there is
    # no online softmax.
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * D + tl.arange(0, D)[None, :]
    f = tl.arange(0, BLOCK_F)[:, None]
    rows = f < F
    q = tl.load(q_ptr + b * sq_b + p * sq_p + f * sq_f + cols, mask=rows, other=0.0)
    k = tl.load(k_ptr + b * sk_b + p * sk_p + f * sk_f + cols, mask=rows, other=0.0)
    v = tl.load(v_ptr + b * sv_b + p * sv_p + f * sv_f + cols, mask=rows, other=0.0)
    s = tl.dot(q, tl.trans(k)) * scale_log2
    s = tl.where(tl.arange(0, BLOCK_F)[None, :] < F, s, float("-inf"))
    w = tl.exp2(s - tl.max(s, 1)[:, None])
    # As flash attention does: the probabilities rounded to the activation dtype for P·V, the sum kept in float32.
    o = tl.dot(w.to(v.dtype), v) / tl.sum(w, 1)[:, None]
    tl.store(o_ptr + b * so_b + p * so_p + f * so_f + cols, o.to(o_ptr.dtype.element_ty), mask=rows)


@triton.jit
def _add_layer_norm_kernel(x_ptr, r_ptr, c_ptr, w_ptr, b_ptr, first_ptr, s_ptr, y_ptr, M, C, c_outer, c_inner, eps,
                           HAS_C: tl.constexpr, KEEP_FIRST: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_C: tl.constexpr):
    # BLOCK_M whole rows of [M, C] per program, read once: the sum and its statistics stay in registers.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.arange(0, BLOCK_C)[None, :]
    inside = (rows < M) & (cols < C)
    dtype = s_ptr.dtype.element_ty
    s = (tl.load(x_ptr + rows * C + cols, mask=inside, other=0.0).to(tl.float32)
         + tl.load(r_ptr + rows * C + cols, mask=inside, other=0.0).to(tl.float32)).to(dtype)
    if KEEP_FIRST:
        tl.store(first_ptr + rows * C + cols, s, mask=inside)
    if HAS_C:
        # One row of c per c_inner rows of a group of c_outer: (row // c_outer) * c_inner + row % c_inner.
        c_rows = (rows // c_outer) * c_inner + rows % c_inner
        s = (s.to(tl.float32) + tl.load(c_ptr + c_rows * C + cols, mask=inside, other=0.0).to(tl.float32)).to(dtype)
    tl.store(s_ptr + rows * C + cols, s, mask=inside)
    v = s.to(tl.float32)
    mean = tl.sum(v, 1)[:, None] / C
    d = tl.where(inside, v - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(d * d, 1)[:, None] / C + eps)
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows * C + cols, (d * rstd * w + b).to(dtype), mask=inside)


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
    `config` (tile sizes, warps, stages) replaces the measured default and `gelu` ("erf": libdevice, "as", "tanh")
    the erf, for benchmarks."""
    m, k = x.shape
    n = weight.shape[0] // 2
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    sms = _num_sms(x.device)
    cfg = config or _GEGLU_CONFIG
    grid = (min(sms, triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"])),)
    _geglu_kernel[grid](x, weight, bias, out, m, n, k, G=group, NUM_SMS=sms, GELU=gelu, **cfg)
    return out


def temporal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, positions: int,
                  config: dict | None = None) -> torch.Tensor:
    """x [B, frames·positions, CI] contiguous; weight [3·CO, CI] (tap-major); bias [CO] → [B, frames·positions, CO]."""
    b, r, ci = x.shape
    co = weight.shape[0] // 3
    out = torch.empty(b, r, co, device=x.device, dtype=x.dtype)
    sms = _num_sms(x.device)
    cfg = config or _CONV_CONFIG
    tiles = triton.cdiv(r, cfg["BLOCK_M"]) * triton.cdiv(co, cfg["BLOCK_N"])
    _temporal_conv_kernel[(min(sms, b * tiles),)](x, weight, bias, out, b, r, positions, ci, co, NUM_SMS=sms, **cfg)
    return out


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, out: torch.Tensor | None = None,
                    num_warps: int = 1) -> torch.Tensor:
    """Softmax self-attention of q, k, v [B, P, F, heads·D]: B·P sequences of F <= 128 tokens, at any strides with
    each head's D channels contiguous; scale 1/sqrt(D). Writes `out` (same shape, any strides; by default a new
    contiguous tensor) and returns it."""
    b, p, f, c = q.shape
    d = c // heads
    if out is None:
        out = torch.empty(b, p, f, c, device=q.device, dtype=q.dtype)
    block_f = max(16, triton.next_power_of_2(f))
    _short_attention_kernel[(p, heads, b)](q, k, v, out, f, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                                           *out.stride()[:3], d ** -0.5 * 1.4426950408889634, D=d, BLOCK_F=block_f,
                                           num_warps=num_warps)
    return out


def _add_layer_norm_config(c: int) -> dict:
    # Measured on an H200 (benchmarks/add_layer_norm.py): 8 rows a program up to 1,024 channels, 4 at 2,048, 4 warps.
    block_c = triton.next_power_of_2(c)
    return dict(BLOCK_M=max(1, min(8, 8192 // block_c)), BLOCK_C=block_c, num_warps=4)


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   c: torch.Tensor | None = None, c_outer: int = 1, c_inner: int = 1, keep_first: bool = False,
                   config: dict | None = None):
    """s = x + residual (+ c's row (i // c_outer) * c_inner + i % c_inner for row i), each sum rounded as torch
    rounds it, and layer_norm(s) * weight + bias; x, residual, c contiguous [rows, C]. Returns (s, normed), or with
    `keep_first` (x + residual, s, normed)."""
    m, cols = x.shape
    s = torch.empty_like(x)
    y = torch.empty_like(x)
    first = torch.empty_like(x) if keep_first else s
    cfg = config or _add_layer_norm_config(cols)
    _add_layer_norm_kernel[(triton.cdiv(m, cfg["BLOCK_M"]),)](
        x, residual, c if c is not None else x, weight, bias, first, s, y, m, cols, c_outer, c_inner, eps,
        HAS_C=c is not None, KEEP_FIRST=keep_first, **cfg)
    return (first, s, y) if keep_first else (s, y)
