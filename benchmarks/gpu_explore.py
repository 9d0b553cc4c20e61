"""Which optimisations move full-size SVD-XT's UNet step and VAE decode on this GPU: one process, many variants.

Times one denoising step (UNet forward on the CFG batch of 2 × 25 frames at 72×128 latents) under each SDPA backend,
channels_last, fused QKV, a 2-job batch and torch.compile, breaks a step down by kernel family with the profiler, and
times the VAE decode of one video (chunks of 8) eager, channels_last and compiled. Every variant's output is compared
with the eager default's. Results are appended to --json after each stage, so a run cut short still reports.

    python benchmarks/gpu_explore.py --json out.json            # on a GPU, full size, random weights
    python benchmarks/gpu_explore.py --tiny --json /tmp/e.json  # CPU smoke test of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from gpu_throughput import build_full_pipeline  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--tiny", action="store_true", help="use renderer.builtin_models on the CPU (smoke test)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--mode", choices=("full", "quick", "low"), default="full",
                   help="full: every stage above; quick: eager effect of the exact rewrites in renderer.performance; "
                        "low: step time and memory of model offload ± forward chunking, with a profile")
    p.add_argument("--compile-budget-s", type=float, default=300.0, help="skip optional compile stages started after this many seconds")
    return p.parse_args(argv)


class Timer:
    """Median wall time of a callable over `iters` runs after `warmup`, synchronised on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn, warmup=1, iters=3):
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        times = []
        for _ in range(iters):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times), out


def diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float(), b.float()
    d = (a - b).abs()
    return {
        "max_abs": d.max().item(),
        "rel_l2": ((a - b).norm() / b.norm().clamp_min(1e-12)).item(),
        "finite": bool(torch.isfinite(a).all().item()),
    }


def kernel_breakdown(fn, device, rows: int = 25) -> dict:
    """CUDA time per kernel family over one call of fn (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return {}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    families: dict[str, float] = {}
    top = []
    for evt in prof.key_averages():
        t = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if t <= 0 or evt.key.startswith("aten::") or evt.key.startswith("cuda"):
            continue
        name = evt.key.lower()
        if name.startswith("triton_") and not name.startswith("triton_tem"):
            # Inductor names a fused kernel after every op in it ("..._convolution_native_group_norm_..." is a
            # group norm fused with a convolution's bias add): only its kind is telling.
            reduction = any(k in name for k in ("norm", "var_mean", "triton_red_", "triton_per_"))
            fam = "norm/reduction" if reduction else "elementwise/other"
        elif any(k in name for k in ("flash", "fmha", "attention", "attn", "sdpa", "cudnn_generated_fort_native_sdpa")):
            fam = "attention"
        elif "conv" in name or "implicit" in name or "xmma_fprop" in name or "cutlass__5x_cudnn" in name:
            fam = "convolution"
        elif any(k in name for k in ("gemm", "sm90_xmma", "cutlass", "wgmma", "nvjet", "matmul", "triton_tem")):
            fam = "gemm"
        elif "norm" in name or "welford" in name or "red_fused" in name or "per_fused" in name:
            fam = "norm/reduction"
        elif "nchwtonhwc" in name or "nhwctonchw" in name or "transpose" in name or "copy" in name:
            fam = "layout/copy"
        else:
            fam = "elementwise/other"
        families[fam] = families.get(fam, 0.0) + t / 1e6
        top.append((t / 1e6, evt.count, evt.key[:110]))
    top.sort(reverse=True)
    return {
        "families_s": dict(sorted(families.items(), key=lambda kv: -kv[1])),
        "total_s": sum(families.values()),
        "top": [{"s": round(s, 5), "count": c, "kernel": k} for s, c, k in top[:rows]],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    results: dict = {"argv": sys.argv[1:], "stages": {}}

    def save(stage: str, value):
        results["stages"][stage] = value
        results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"[{results['elapsed_s']:7.1f}s] {stage}: {json.dumps(value)[:600]}", flush=True)

    if args.tiny:
        from renderer.builtin_models import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        device, dtype = torch.device("cpu"), torch.float32
        frames, lh, lw = 8, 8, 8
    else:
        device, dtype = torch.device("cuda"), torch.float16
        pipe = build_full_pipeline(device, dtype)
        frames, lh, lw = 25, 72, 128
    import diffusers

    results["versions"] = {"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda}
    results["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    unet, vae = pipe.unet, pipe.vae
    timer = Timer(device)

    g = torch.Generator(device).manual_seed(7)

    def inputs(batch_jobs: int):
        b = 2 * batch_jobs  # CFG: unconditional half first, as the pipeline orders it
        latents = torch.randn(b, frames, 4, lh, lw, generator=g, device=device, dtype=dtype)
        image_latents = torch.randn(b, frames, 4, lh, lw, generator=g, device=device, dtype=dtype)
        image_latents[:batch_jobs] = 0
        sample = torch.cat([latents, image_latents], dim=2)
        emb = torch.randn(b, 1, unet.config.cross_attention_dim, generator=g, device=device, dtype=dtype)
        emb[:batch_jobs] = 0
        time_ids = torch.tensor([[6.0, 127.0, 0.02]], device=device, dtype=dtype).repeat(b, 1)
        t = torch.tensor(0.25 * torch.log(torch.tensor(700.0)).item(), device=device)
        return sample, t, emb, time_ids

    x1 = inputs(1)
    step = lambda x=x1: unet(x[0], x[1], encoder_hidden_states=x[2], added_time_ids=x[3], return_dict=False)[0]  # noqa: E731

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def with_backend(name, fn):
        if name == "auto" or device.type != "cuda":
            return fn()
        backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                   "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
        with sdpa_kernel([backend, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
                         set_priority=True):
            return fn()

    from renderer.performance import fuse_qkv_projections, channels_last_convolutions

    def contiguous_convolutions(module):
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.data = m.weight.data.contiguous()

    if args.mode == "quick":
        return quick_stages(unet, vae, step, timer, save, kernel_breakdown, device, args, frames, lh, lw, dtype, g)
    if args.mode == "low":
        return low_stages(pipe, timer, save, device, args)

    with torch.no_grad():
        t_ref, ref = timer(step, iters=args.iters)
        save("eager_default", {"step_s": t_ref, "finite": bool(torch.isfinite(ref).all()), "std": ref.float().std().item()})

        best_backend, best_t = "auto", t_ref
        for name in ("flash", "efficient", "cudnn"):
            try:
                t, out = timer(lambda: with_backend(name, step), iters=args.iters)
                save(f"eager_sdpa_{name}", {"step_s": t, **diff(out, ref)})
                if t < best_t * 0.99:
                    best_backend, best_t = name, t
            except Exception as e:  # a backend that rejects these shapes is a result, not a crash
                save(f"eager_sdpa_{name}", {"error": repr(e)[:300]})
        results["best_backend"] = best_backend

        channels_last_convolutions(unet)
        t_cl, out = timer(lambda: with_backend(best_backend, step), iters=args.iters)
        save("eager_channels_last", {"step_s": t_cl, **diff(out, ref)})
        channels_last = t_cl < best_t * 0.99
        if not channels_last:
            contiguous_convolutions(unet)
        else:
            best_t = t_cl

        
        fuse_qkv_projections(unet)
        t_f, out = timer(lambda: with_backend(best_backend, step), iters=args.iters)
        save("eager_fused_qkv", {"step_s": t_f, **diff(out, ref), "channels_last": channels_last})
        fused = t_f < best_t * 0.99
        if fused:
            best_t = t_f
        else:
            from diffusers.models.attention_processor import AttnProcessor2_0

            for m in unet.modules():
                if hasattr(m, "fused_projections") and m.fused_projections:
                    m.fused_projections = False
            unet.set_attn_processor(AttnProcessor2_0())
        results["best_eager"] = {"backend": best_backend, "channels_last": channels_last, "fused_qkv": fused,
                                 "step_s": best_t}

        x2 = inputs(2)
        t_b2, _ = timer(lambda: with_backend(best_backend, lambda: step(x2)), iters=args.iters)
        save("eager_batch_2_jobs", {"step_s_per_call": t_b2, "step_s_per_video": t_b2 / 2, "vs_single": best_t})

        unet.enable_forward_chunking()
        t_fc, out = timer(lambda: with_backend(best_backend, step), iters=args.iters)
        save("eager_forward_chunking", {"step_s": t_fc, **diff(out, ref)})
        for m in unet.modules():
            if hasattr(m, "set_chunk_feed_forward"):
                m.set_chunk_feed_forward(None)

        save("eager_profile", kernel_breakdown(lambda: with_backend(best_backend, step), device))

        # VAE decode of one video, chunks of 8, as the pipeline does it (fp16; force_upcast only affects encoding).
        lat = torch.randn(frames, 4, lh, lw, generator=g, device=device, dtype=dtype) / vae.config.scaling_factor

        def decode():
            outs = [vae.decode(lat[i : i + 8], num_frames=lat[i : i + 8].shape[0]).sample for i in range(0, frames, 8)]
            return torch.cat(outs)

        t_vae, vref = timer(decode, iters=args.iters)
        save("vae_decode_eager", {"s": t_vae, "finite": bool(torch.isfinite(vref).all())})
        channels_last_convolutions(vae)
        t_vcl, out = timer(decode, iters=args.iters)
        save("vae_decode_channels_last", {"s": t_vcl, **diff(out, vref)})
        save("vae_decode_profile", kernel_breakdown(decode, device))

        if args.skip_compile:
            return 0
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/svdr-explore-inductor")
        t0 = time.perf_counter()
        unet.compile(fullgraph=True, dynamic=False)
        try:
            out = with_backend(best_backend, step)
        except Exception as e:
            save("unet_compiled_default", {"error": repr(e)[:600]})
            return 1
        timer.sync()
        compile_s = time.perf_counter() - t0
        t_c, out = timer(lambda: with_backend(best_backend, step), iters=args.iters)
        save("unet_compiled_default", {"step_s": t_c, "first_call_s": compile_s, **diff(out, ref),
                                       "settings": results["best_eager"]})
        save("compiled_profile", kernel_breakdown(lambda: with_backend(best_backend, step), device))

        if time.perf_counter() - t_start < args.compile_budget_s:
            t0 = time.perf_counter()
            vae.decoder.compile(dynamic=False)
            out = decode()
            timer.sync()
            compile_vae_s = time.perf_counter() - t0
            t_vc, out = timer(decode, iters=args.iters)
            save("vae_decode_compiled", {"s": t_vc, "first_call_s": compile_vae_s, **diff(out, vref)})

        if best_backend != "auto" and time.perf_counter() - t_start < args.compile_budget_s:
            # Does the backend still matter once compiled? Recompiles under torch's default SDPA choice.
            torch._dynamo.reset()
            unet._compiled_call_impl = None
            unet.compile(fullgraph=True, dynamic=False)
            t0 = time.perf_counter()
            step()
            timer.sync()
            first = time.perf_counter() - t0
            t_ca, out = timer(step, iters=args.iters)
            save("unet_compiled_sdpa_auto", {"step_s": t_ca, "first_call_s": first, **diff(out, ref)})
    return 0


def quick_stages(unet, vae, step, timer, save, kernel_breakdown, device, args, frames, lh, lw, dtype, g) -> int:
    """Eager step time and output change of each exact rewrite, applied cumulatively."""
    from renderer import performance

    with torch.no_grad():
        t_ref, ref = timer(step, iters=args.iters)
        save("eager_default", {"step_s": t_ref})
        n = performance.single_token_cross_attention(unet)
        t, out = timer(step, iters=args.iters)
        save("eager_cross_attention_shortcut", {"step_s": t, "layers": n, **diff(out, ref)})
        n = performance.temporal_convs_as_2d(unet)
        t, out = timer(step, iters=args.iters)
        save("eager_plus_temporal_conv_as_2d", {"step_s": t, "convs": n, **diff(out, ref)})
        performance.channels_last_convolutions(unet)
        t, out = timer(step, iters=args.iters)
        save("eager_plus_channels_last", {"step_s": t, **diff(out, ref)})
        save("eager_rewritten_profile", kernel_breakdown(step, device))

        lat = torch.randn(frames, 4, lh, lw, generator=g, device=device, dtype=dtype) / vae.config.scaling_factor

        def decode():
            return torch.cat([vae.decode(lat[i : i + 8], num_frames=lat[i : i + 8].shape[0]).sample
                              for i in range(0, frames, 8)])

        t_v, vref = timer(decode, iters=args.iters)
        n = performance.temporal_convs_as_2d(vae)
        t, out = timer(decode, iters=args.iters)
        save("vae_decode_temporal_conv_as_2d", {"s": t, "eager_s": t_v, "convs": n, **diff(out, vref)})
    return 0


def low_stages(pipe, timer, save, device, args) -> int:
    """Why is the offloading profile slow: step time on the GPU and offloaded, with and without FF chunking."""
    from PIL import Image

    from gpu_throughput import StepClock

    image = Image.new("RGB", (1024, 576), (90, 120, 200))

    def steps(n=4, chunk=2):
        clock = StepClock(device)
        torch.cuda.reset_peak_memory_stats()
        pipe(image, num_inference_steps=n, decode_chunk_size=chunk, output_type="latent",
             generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=clock)
        s = clock.step_seconds()
        return {"step_s": [round(x, 3) for x in s], "denoise_peak_gib": round(clock.denoise_peak / 2**30, 2),
                "reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}

    def chunking(on):
        for m in pipe.unet.modules():
            if hasattr(m, "set_chunk_feed_forward"):
                m.set_chunk_feed_forward(1 if on else None)

    with torch.inference_mode():
        save("gpu_plain", steps())
        chunking(True)
        save("gpu_chunking", steps())
        pipe.enable_model_cpu_offload(device="cuda")
        save("offload_chunking", steps())
        chunking(False)
        save("offload_no_chunking", steps())
        chunking(True)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            steps(n=2)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70)
        print(table)
        save("offload_chunking_profile_cpu", table.splitlines()[:40])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
