"""Module rewrites of diffusers' SVD blocks: each computes what the block computes, in fewer or better-placed
kernels (exact, or equal up to float rounding, as each docstring says). renderer/speed/runtime.py applies them."""

from __future__ import annotations

import torch

# The widest intermediate a chunked feed-forward may allocate (GEGLU's projection output).
FEED_FORWARD_CHUNK_BYTES = 128 << 20


def vae_encoder_in_float32(vae: torch.nn.Module) -> bool:
    """Keep an fp16 SVD VAE's encoder (and quant_conv) in float32 for good; True if changed.

    SVD's VAE config sets force_upcast, so each pipeline call casts the whole VAE to float32 to encode the input image
    and back to fp16 (0.019 s a job on an H200, and a warning each way). The pipeline checks `vae.dtype`, the first
    parameter's, which is the encoder's: with the encoder already in float32 it skips both casts and encodes with the
    same float32 weights (fp16 values widened) as before, so the image latents are bit-identical; the decoder stays
    fp16. Costs the encoder's extra 68 MB.
    """
    if not getattr(vae.config, "force_upcast", False) or vae.dtype != torch.float16:
        return False
    vae.encoder.to(torch.float32)
    vae.quant_conv.to(torch.float32)
    return vae.dtype == torch.float32


class SingleTokenCrossAttnProcessor:
    """Cross-attention onto a single key/value token, computed exactly without the attention kernel.

    With one key the softmax weight is exactly 1, so the output is to_out(to_v(context)) for every query. SVD's
    cross-attention always attends to one CLIP image token, so the query projection, the SDPA call over every
    latent pixel and the output projection of identical rows are all skipped. Any other call goes to `fallback`.
    """

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if (
            encoder_hidden_states is None
            or encoder_hidden_states.ndim != 3
            or encoder_hidden_states.shape[1] != 1
            or hidden_states.ndim != 3
            or attention_mask is not None
            or attn.spatial_norm is not None
            or attn.group_norm is not None
        ):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        out = _single_token_output(attn, encoder_hidden_states)  # [B, 1, C]
        out = out.expand(hidden_states.shape[0], hidden_states.shape[1], out.shape[-1])
        if attn.residual_connection:
            out = out + hidden_states
        if attn.rescale_output_factor != 1.0:
            out = out / attn.rescale_output_factor
        return out


def _single_token_output(attn, context: torch.Tensor) -> torch.Tensor:
    """The output of attention onto the one token of each context [N, 1, C'] row: [N, 1, C]."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    return attn.to_out[1](attn.to_out[0](attn.to_v(context)))


def single_token_cross_attention(module: torch.nn.Module) -> int:
    """Route every cross-attention layer of `module` through SingleTokenCrossAttnProcessor; returns how many."""
    from diffusers.models.attention_processor import Attention

    count = 0
    for m in module.modules():
        if isinstance(m, Attention) and m.is_cross_attention and not isinstance(m.processor, SingleTokenCrossAttnProcessor):
            m.set_processor(SingleTokenCrossAttnProcessor(m.processor))
            count += 1
    return count


class ChannelStatsGroupNorm(torch.nn.Module):
    """GroupNorm from per-channel mean and variance, combined per group: the same function, in other reductions.

    SVD's temporal blocks normalise [B, C, F, H, W] tensors with B = 2 (the CFG pair): 64 groups of 2.3 M values
    each, which Inductor's fused group-norm reduction runs on 64 thread blocks at a few percent of memory bandwidth
    (1.8 ms a call on an H200, benchmarks/README.md). Per-channel statistics are a reduction over the non-channel
    dimensions, which Inductor splits across the whole GPU; the group statistics follow exactly from them
    (equal counts per channel: var_g = mean(var_c) + mean((mean_c - mean_g)^2)). Welford in float32 throughout, as
    the native kernel, so the output differs from it only by rounding.
    """

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, g = x.shape[0], x.shape[1], self.num_groups
        var_c, mean_c = torch.var_mean(x.float(), dim=tuple(range(2, x.dim())), correction=0)
        var_c, mean_c = var_c.view(b, g, c // g), mean_c.view(b, g, c // g)
        mean_g = mean_c.mean(-1, keepdim=True)
        var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).square().mean(-1, keepdim=True)
        scale = torch.rsqrt(var_g + self.eps).expand(b, g, c // g).reshape(b, c)
        if self.weight is not None:
            scale = scale * self.weight.float()
        shift = -mean_g.expand(b, g, c // g).reshape(b, c) * scale
        if self.bias is not None:
            shift = shift + self.bias.float()
        shape = (b, c) + (1,) * (x.dim() - 2)
        return (x.float() * scale.view(shape) + shift.view(shape)).to(x.dtype)


def channel_stats_group_norms(module: torch.nn.Module) -> int:
    """Replace every torch.nn.GroupNorm under `module` with ChannelStatsGroupNorm; returns how many."""
    return replace_children(module, lambda child, parent: type(child) is torch.nn.GroupNorm, ChannelStatsGroupNorm)


class EfficientShortAttnProcessor:
    """Self-attention through PyTorch's memory-efficient SDPA kernel, for SVD's temporal layers (25-token sequences).

    torch picks cuDNN's flash kernel for every SDPA call on Hopper; on sequences of 25 frames it runs at 9 TFLOP/s
    against 14 for the memory-efficient kernel (15 ms against 9 ms of each step, benchmarks/README.md). The kernels
    compute the same softmax attention; outputs differ by rounding. Anything but plain CUDA self-attention goes to
    `fallback`.
    """

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        if (
            encoder_hidden_states is not None
            or attention_mask is not None
            or hidden_states.ndim != 3
            or not hidden_states.is_cuda
            or not _plain_attention(attn)
        ):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        return _self_attention(attn, hidden_states, lambda q, k, v: (
            torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0]))


def _self_attention(attn, x: torch.Tensor, sdpa=torch.nn.functional.scaled_dot_product_attention) -> torch.Tensor:
    """A _plain_attention layer's self-attention over x [B, N, C]: its projections, `sdpa` on [B, heads, N, D]
    views, its output projection; what diffusers' AttnProcessor2_0 computes for such a layer."""
    b, n, _ = x.shape
    q, k, v = (t.view(b, n, attn.heads, -1).transpose(1, 2) for t in (attn.to_q(x), attn.to_k(x), attn.to_v(x)))
    return attn.to_out[1](attn.to_out[0](sdpa(q, k, v).transpose(1, 2).reshape(b, n, -1)))


def _plain_attention(attn) -> bool:
    """Whether a diffusers Attention is only projections, softmax attention and the output projection."""
    return (attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
            and not attn.residual_connection and attn.rescale_output_factor == 1.0)


def efficient_temporal_attention(unet: torch.nn.Module) -> int:
    """Route the self-attention of every TemporalBasicTransformerBlock through EfficientShortAttnProcessor."""
    from diffusers.models.attention import TemporalBasicTransformerBlock

    count = 0
    for block in unet.modules():
        if isinstance(block, TemporalBasicTransformerBlock) and not isinstance(block.attn1.processor,
                                                                               EfficientShortAttnProcessor):
            block.attn1.set_processor(EfficientShortAttnProcessor(block.attn1.processor))
            count += 1
    return count


class RowChunkedFeedForward(torch.nn.Module):
    """A per-token feed-forward run on at most `rows` tokens at a time, into one preallocated output.

    Exact, since every token is independent. diffusers' enable_forward_chunking slices the temporal blocks along the
    frame axis into strided views; with model offload that ran 6x slower per step, bmm taking 70% of the GPU time
    (benchmarks/README.md). Every chunk here is a contiguous block of rows: one plain GEMM each.
    """

    def __init__(self, ff: torch.nn.Module, rows: int):
        super().__init__()
        self.ff = ff
        self.rows = rows

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        if flat.shape[0] <= self.rows:
            return self.ff(hidden_states, *args, **kwargs)
        out = None
        for start in range(0, flat.shape[0], self.rows):
            part = self.ff(flat[start : start + self.rows], *args, **kwargs)
            if out is None:
                out = part.new_empty(flat.shape[0], part.shape[-1])
            out[start : start + part.shape[0]] = part
        return out.reshape(*hidden_states.shape[:-1], out.shape[-1])


def chunk_feed_forwards(module: torch.nn.Module, max_bytes: int = FEED_FORWARD_CHUNK_BYTES) -> int:
    """Wrap every diffusers FeedForward under `module` in RowChunkedFeedForward; returns how many."""
    from diffusers.models.attention import FeedForward

    def chunked(ff):
        widest = max(m.out_features for m in ff.modules() if isinstance(m, torch.nn.Linear))
        itemsize = next(ff.parameters()).element_size()
        return RowChunkedFeedForward(ff, max(1, max_bytes // (widest * itemsize)))

    return replace_children(
        module, lambda child, parent: isinstance(child, FeedForward) and not isinstance(parent, RowChunkedFeedForward),
        chunked)


def one_sample_at_a_time(unet: torch.nn.Module) -> bool:
    """Make `unet` run a batch one sample at a time and concatenate the outputs; False if it already does.

    Exact: in SVD's UNet no layer mixes batch samples (the temporal layers mix the frames of one sample), so the CFG
    pair gives the same output separately, with half the activation memory. Patched on the instance, before
    offload hooks wrap it.
    """
    if getattr(unet, "_svdrender_one_sample_at_a_time", False):
        return False
    forward = unet.forward

    def sample_by_sample(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        if sample.shape[0] == 1:
            return forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        per_sample = torch.is_tensor(timestep) and timestep.ndim > 0 and timestep.numel() > 1
        out = torch.cat([
            forward(sample[i : i + 1], timestep[i : i + 1] if per_sample else timestep,
                    encoder_hidden_states[i : i + 1], added_time_ids[i : i + 1], return_dict=False)[0]
            for i in range(sample.shape[0])
        ])
        if return_dict:
            from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

            return UNetSpatioTemporalConditionOutput(sample=out)
        return (out,)

    unet.forward = sample_by_sample
    unet._svdrender_one_sample_at_a_time = True
    return True


def replace_children(module: torch.nn.Module, wanted, make) -> int:
    """Replace every submodule `child` of `module` for which wanted(child, its parent) holds with make(child);
    returns how many. The matches are collected first, so a replacement is never itself visited."""
    targets = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if wanted(child, parent)]
    for parent, name, child in targets:
        setattr(parent, name, make(child))
    return len(targets)
