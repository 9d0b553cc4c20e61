"""Where a compiled SVD-XT UNet step still loses time, kernel by kernel, and which knobs win it back.

One process, full-size SVD-XT UNet with random weights, the cross-attention shortcut and temporal Conv2d rewrites:
  1. records every convolution and attention call of one eager step (shape, strides, count);
  2. times each distinct convolution with cuDNN's heuristic choice and with `cudnn.benchmark` (autotuned), and the
     temporal (3,1) convolutions also as three accumulated GEMMs; each distinct attention call under every SDPA
     backend; prints achieved TFLOP/s and the step's total per op family;
  3. times the eager step and the compiled step with cudnn.benchmark off and on, and profiles the compiled step by
     kernel family and top kernels.
With `--stages fused` it measures instead where a pipeline call's preparation time goes, every VAE decoder
convolution alone, and the compiled UNet step without and with CUDA graph replay and renderer/triton_kernels.py.
Each stage is appended to --json as it finishes, so a run cut short still reports.

    python benchmarks/gpu_kernels.py --json kernels.json
    python benchmarks/gpu_kernels.py --stages fused --json fused.json
    python benchmarks/gpu_kernels.py --tiny --json /tmp/k.json     # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from gpu_explore import Timer, diff, kernel_breakdown  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=520.0, help="skip stages that would start after this")
    p.add_argument("--stages", default="record,micro,eager,compile,vae",
                   help="comma-separated stages: record,micro,eager,compile,vae; or 'fused' for this round's")
    return p.parse_args(argv)


class CallRecorder(torch.overrides.TorchFunctionMode):
    """Counts conv2d / conv3d / SDPA calls by (shapes, strides, arguments) during one forward."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d, F.conv3d, torch.conv3d):
            x, w = args[0], args[1]
            stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
            padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
            self.calls[("conv", tuple(x.shape), tuple(x.stride()), tuple(w.shape), _t(stride), _t(padding))] += 1
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            self.calls[("sdpa", tuple(q.shape), tuple(q.stride()), tuple(k.shape), tuple(k.stride()))] += 1
        return func(*args, **kwargs)


def _t(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def conv_flop(x_shape, w_shape, out_shape) -> float:
    cout, cin_g, *kernel = w_shape
    k = 1
    for d in kernel:
        k *= d
    n_out = 1
    for d in out_shape:
        n_out *= d
    return 2.0 * n_out * cin_g * k


def recorded_conv(key, device, dtype):
    """Random input (with the recorded strides) and weight for a CallRecorder conv key, the function, stride, padding."""
    _, xs, xst, ws, stride, padding = key
    x = torch.empty_strided(xs, xst, device=device, dtype=dtype).normal_()
    w = torch.randn(ws, device=device, dtype=dtype) * 0.02
    fn = F.conv2d if len(ws) == 4 else F.conv3d
    return x, w, fn, stride if len(stride) > 1 else stride[0], padding if len(padding) > 1 else padding[0]


def micro_convs(calls, device, dtype, timer, iters, save):
    rows, totals = [], {"heuristic_s": 0.0, "benchmark_s": 0.0, "best_s": 0.0, "flop": 0.0}
    for key, count in sorted(calls.items(), key=lambda kv: str(kv[0])):
        if key[0] != "conv":
            continue
        _, xs, xst, ws, stride, _ = key
        x, w, fn, st, pad = recorded_conv(key, device, dtype)
        row = {"x": xs, "x_stride": xst, "w": ws, "stride": st, "padding": pad, "count": count}
        try:
            for layout in ("as_recorded", "channels_last"):
                xx, ww = x, w
                if layout == "channels_last":
                    if x.dim() != 4:
                        continue
                    xx = x.contiguous(memory_format=torch.channels_last)
                    ww = w.contiguous(memory_format=torch.channels_last)
                for bench in (False, True):
                    torch.backends.cudnn.benchmark = bench
                    t, out = timer(lambda: fn(xx, ww, None, st, pad), warmup=2, iters=iters)
                    row[f"{layout}_{'bench' if bench else 'heur'}_ms"] = round(t * 1e3, 3)
            flop = conv_flop(xs, ws, out.shape)
            row["gflop"] = round(flop / 1e9, 2)
            if len(ws) == 4 and ws[2:] == (3, 1) and tuple(stride) in ((1,), (1, 1)):
                # Temporal conv over (frames, h*w): out[f] = sum_k W_k x[f+k-1], as three accumulated GEMMs.
                b, c, f, hw = xs
                x_nhwc = x.permute(0, 2, 3, 1).contiguous()  # [B, F, HW, C]
                wk = [w[:, :, k, 0].t().contiguous() for k in range(3)]

                def gemm3():
                    y = torch.matmul(x_nhwc, wk[1])
                    y[:, 1:] += torch.matmul(x_nhwc[:, :-1], wk[0])
                    y[:, :-1] += torch.matmul(x_nhwc[:, 1:], wk[2])
                    return y

                t, _ = timer(gemm3, warmup=2, iters=iters)
                row["gemm3_ms"] = round(t * 1e3, 3)
                xpad = F.pad(x_nhwc, (0, 0, 0, 0, 1, 1))
                wcat = torch.cat(wk, 0)

                def im2col():
                    cols = torch.cat([xpad[:, k : k + f] for k in range(3)], dim=-1)
                    return torch.matmul(cols, wcat)

                t, _ = timer(im2col, warmup=2, iters=iters)
                row["im2col_gemm_ms"] = round(t * 1e3, 3)
        except Exception as exc:  # a shape a backend rejects is a result
            row["error"] = repr(exc)[:200]
        torch.backends.cudnn.benchmark = False
        times = [v for k, v in row.items() if k.endswith("_ms")]
        if times:
            totals["heuristic_s"] += row.get("as_recorded_heur_ms", 0) * count / 1e3
            totals["benchmark_s"] += row.get("as_recorded_bench_ms", 0) * count / 1e3
            totals["best_s"] += min(times) * count / 1e3
            totals["flop"] += row.get("gflop", 0) * 1e9 * count
            row["tflops_heur"] = round(row.get("gflop", 0) / max(row.get("as_recorded_heur_ms", 1e9), 1e-9), 1)
            row["tflops_best"] = round(row.get("gflop", 0) / max(min(times), 1e-9), 1)
        rows.append(row)
    totals = {k: round(v, 4) for k, v in totals.items()}
    save("micro_conv", {"totals_per_step": totals, "rows": rows})


def micro_sdpa(calls, device, dtype, timer, iters, save):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    rows, totals = [], Counter()
    for key, count in sorted(calls.items(), key=lambda kv: str(kv[0])):
        if key[0] != "sdpa":
            continue
        _, qs, qst, ks, kst = key
        q = torch.empty_strided(qs, qst, device=device, dtype=dtype).normal_()
        k = torch.empty_strided(ks, kst, device=device, dtype=dtype).normal_()
        v = torch.empty_strided(ks, kst, device=device, dtype=dtype).normal_()
        b, h, lq, d = qs
        flop = 4.0 * b * h * lq * ks[2] * d
        row = {"q": qs, "q_stride": qst, "k": ks, "count": count, "gflop": round(flop / 1e9, 2)}
        best = None
        for name, backend in backends.items():
            if name == "math" and b * h * lq * ks[2] > 2**31:
                continue
            try:
                with sdpa_kernel([backend]):
                    t, _ = timer(lambda: F.scaled_dot_product_attention(q, k, v), warmup=2, iters=iters)
                row[f"{name}_ms"] = round(t * 1e3, 3)
                row[f"{name}_tflops"] = round(flop / t / 1e12, 1)
                totals[name] += t * count
                best = t if best is None else min(best, t)
            except Exception as exc:
                row[f"{name}_error"] = repr(exc)[:120]
        if best is not None:
            totals["best"] += best * count
        rows.append(row)
    save("micro_sdpa", {"totals_per_step_s": {k: round(v, 4) for k, v in totals.items()}, "rows": rows})


def write_kernel_table(fn, device, args, name: str, rows: int) -> None:
    """The top CUDA kernels of one call of fn, as torch.profiler's table, to $OUT (or next to --json)."""
    if device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=120)
    out_dir = os.environ.get("OUT") or os.path.dirname(os.path.abspath(args.json))
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(table)


def first_call_s(fn, timer) -> float:
    """Seconds of fn's first (compiling) call."""
    t0 = time.perf_counter()
    fn()
    timer.sync()
    return time.perf_counter() - t0


def video_decoder(pipe, device, dtype, frames, lh, lw, g):
    """The VAE (temporal convs as Conv2d) and a function decoding one video's random latents in chunks of 8."""
    from renderer import performance

    vae = pipe.vae
    performance.temporal_convs_as_2d(vae)
    lat = torch.randn(frames, 4, lh, lw, generator=g, device=device, dtype=dtype) / vae.config.scaling_factor

    def decode():
        return torch.cat([vae.decode(lat[i: i + 8], num_frames=lat[i: i + 8].shape[0]).sample
                          for i in range(0, frames, 8)])

    return vae, decode


def main(argv=None) -> int:
    args = parse_args(argv)
    stages = set(args.stages.split(","))
    t_start = time.perf_counter()
    results: dict = {"argv": sys.argv[1:], "stages": {}}

    def save(stage, value):
        results["stages"][stage] = value
        results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"[{results['elapsed_s']:7.1f}s] {stage}: {json.dumps(value, default=str)[:400]}", flush=True)

    def time_left(need: float) -> bool:
        return time.perf_counter() - t_start + need < args.budget_s

    from renderer import performance

    if args.tiny:
        from renderer.builtin_models import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        device, dtype, frames, lh, lw = torch.device("cpu"), torch.float32, 8, 8, 8
    else:
        from gpu_throughput import build_full_pipeline

        device, dtype, frames, lh, lw = torch.device("cuda"), torch.float16, 25, 72, 128
        pipe = build_full_pipeline(device, dtype)
    import diffusers

    results["versions"] = {"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version()}
    unet = pipe.unet
    performance.single_token_cross_attention(unet)
    performance.temporal_convs_as_2d(unet)
    timer = Timer(device)
    g = torch.Generator(device).manual_seed(7)
    b = 2
    latents = torch.randn(b, frames, 4, lh, lw, generator=g, device=device, dtype=dtype)
    image_latents = torch.randn(b, frames, 4, lh, lw, generator=g, device=device, dtype=dtype)
    image_latents[:1] = 0
    sample = torch.cat([latents, image_latents], dim=2)
    emb = torch.randn(b, 1, unet.config.cross_attention_dim, generator=g, device=device, dtype=dtype)
    emb[:1] = 0
    time_ids = torch.tensor([[6.0, 127.0, 0.02]], device=device, dtype=dtype).repeat(b, 1)
    t = torch.tensor(1.2, device=device)

    def step():
        return unet(sample, t, encoder_hidden_states=emb, added_time_ids=time_ids, return_dict=False)[0]

    if "fused" in stages:
        with torch.inference_mode():
            return fused_stages(pipe, step, timer, save, time_left, device, dtype, frames, lh, lw, g, args)

    with torch.inference_mode():
        recorder = CallRecorder()
        with recorder:
            ref = step()
        calls = recorder.calls
        save("record", {"distinct": len(calls), "conv_calls": sum(n for k, n in calls.items() if k[0] == "conv"),
                        "sdpa_calls": sum(n for k, n in calls.items() if k[0] == "sdpa")})
        if "micro" in stages:
            micro_convs(calls, device, dtype, timer, args.iters, save)
            micro_sdpa(calls, device, dtype, timer, args.iters, save)

        if "eager" in stages:
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                ts, out = timer(step, warmup=2, iters=args.iters)
                save(f"eager_step_benchmark_{bench}", {"step_s": round(ts, 4), **diff(out, ref)})
            torch.backends.cudnn.benchmark = False

        if "compile" in stages and time_left(200):
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/svdr-kernels-inductor")
            unet.compile(fullgraph=True, dynamic=False)
            first = first_call_s(step, timer)
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                ts, out = timer(step, warmup=2, iters=args.iters)
                save(f"compiled_step_benchmark_{bench}", {"step_s": round(ts, 4), "first_call_s": round(first, 1),
                                                          **diff(out, ref)})
            save("compiled_profile_benchmark_True", kernel_breakdown(step, device))
            write_kernel_table(step, device, args, "compiled_kernels.txt", rows=60)

        if "vae" in stages and time_left(150):
            vae, decode = video_decoder(pipe, device, dtype, frames, lh, lw, g)
            torch.backends.cudnn.benchmark = False
            tv, vref = timer(decode, warmup=1, iters=3)
            torch.backends.cudnn.benchmark = True
            tvb, out = timer(decode, warmup=2, iters=3)
            save("vae_decode_eager", {"heuristic_s": round(tv, 3), "benchmark_s": round(tvb, 3), **diff(out, vref)})
            vae.decoder.compile(dynamic=False)
            first = first_call_s(decode, timer)
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                tc, out = timer(decode, warmup=2, iters=3)
                save(f"vae_decode_compiled_benchmark_{bench}", {"s": round(tc, 3), "first_call_s": round(first, 1),
                                                                **diff(out, vref)})
            save("vae_compiled_profile", kernel_breakdown(decode, device))
    return 0


def pipeline_overhead(pipe, device, dtype, timer, save, frames, lh, lw):
    """Where one pipeline call's time goes besides the UNet steps: each preparation step, synchronised."""
    from PIL import Image

    from renderer import images

    image = images.fit_image(images.load_image(os.path.join(HERE, "..", "recipes", "inputs", "astronaut.png")),
                             lw * 8, lh * 8, "crop")
    spent: Counter = Counter()

    def timed(name, fn):
        def wrapper(*a, **kw):
            timer.sync()
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            timer.sync()
            spent[name] += time.perf_counter() - t0
            return out
        return wrapper

    originals = {}
    for owner, attr, name in ((pipe, "_encode_image", "clip_encode"), (pipe, "_encode_vae_image", "vae_encode"),
                              (pipe.video_processor, "preprocess", "vae_preprocess"),
                              (pipe, "prepare_latents", "prepare_latents"), (pipe.vae, "to", "vae_dtype_casts"),
                              (pipe.unet, "forward", "unet"), (pipe.scheduler, "step", "scheduler_step")):
        originals[(owner, attr)] = getattr(owner, attr)
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    try:
        for _ in range(2):  # the second call is the one reported
            spent.clear()
            timer.sync()
            t0 = time.perf_counter()
            pipe(image, height=lh * 8, width=lw * 8, num_frames=frames, num_inference_steps=2, decode_chunk_size=8,
                 generator=torch.manual_seed(1), output_type="latent")
            timer.sync()
            total = time.perf_counter() - t0
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    rest = total - sum(spent.values())
    save("pipeline_overhead", {"call_s": round(total, 4), **{k: round(v, 4) for k, v in spent.items()},
                               "unaccounted_s": round(rest, 4), "image": isinstance(image, Image.Image)})


def vae_convs(pipe, device, dtype, timer, save, iters, frames, lh, lw, g):
    """Every convolution of one video's decode (chunks of 8), timed alone with the kernel cuDNN picks."""
    from torch.profiler import ProfilerActivity, profile

    vae, decode = video_decoder(pipe, device, dtype, frames, lh, lw, g)
    recorder = CallRecorder()
    with recorder:
        decode()
    micro_convs(recorder.calls, device, dtype, timer, iters, lambda stage, value: save("vae_" + stage, value))
    kernels = {}
    for key in recorder.calls:
        if key[0] != "conv":
            continue
        x, w, fn, st, pad = recorded_conv(key, device, dtype)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(x, w, None, st, pad)
            torch.cuda.synchronize()
        kernels[str((tuple(x.shape), tuple(w.shape)))] = [e.key[:90] for e in prof.key_averages() if not e.key.startswith(("aten", "cuda"))]
    save("vae_conv_kernels", kernels)


def unet_variants(pipe, step, timer, save, time_left, device, args):
    """The compiled UNet step with the earlier `fast` rewrites, then with CUDA graph replay; then the same with the
    Triton kernels (fused GEGLU, temporal convolution) added."""
    from renderer import performance

    unet = pipe.unet
    performance.channel_stats_group_norms(unet)
    performance.efficient_temporal_attention(unet)
    t_ref, ref = timer(step, warmup=1, iters=args.iters)
    save("eager_fast_rewrites", {"step_s": round(t_ref, 4)})
    if device.type != "cuda":
        return 0
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/svdr-kernels-inductor")
    for variant in ("fast", "fast+triton"):
        if not time_left(200):
            break
        if variant.endswith("triton"):
            performance.drop_cuda_graphs(unet)
            torch._dynamo.reset()
            unet._compiled_call_impl = None
            n = (performance.fused_geglus(unet), performance.triton_temporal_convs(unet))
            te, out = timer(step, warmup=1, iters=args.iters)
            save("eager_triton", {"layers": n, "step_s": round(te, 4), **diff(out, ref)})
        unet.compile(fullgraph=True, dynamic=False)
        first = first_call_s(step, timer)
        ts, out = timer(step, warmup=2, iters=args.iters)
        save(f"compiled_{variant}", {"step_s": round(ts, 4), "first_call_s": round(first, 1), **diff(out, ref)})
        performance.cuda_graph_calls(unet)
        first = first_call_s(step, timer)
        tg, outg = timer(step, warmup=2, iters=args.iters)
        save(f"compiled_graphed_{variant}", {"step_s": round(tg, 4), "capture_s": round(first, 1),
                                              **diff(outg, ref), "vs_compiled": diff(outg, out)})
        save(f"compiled_graphed_{variant}_profile", kernel_breakdown(step, device))
    return 0


def fused_stages(pipe, step, timer, save, time_left, device, dtype, frames, lh, lw, g, args) -> int:
    """A pipeline call's preparation, the VAE decoder's convolutions, and the compiled UNet with CUDA graphs and the
    Triton kernels (their per-shape numbers: benchmarks/triton_candidates.py)."""
    pipeline_overhead(pipe, device, dtype, timer, save, frames, lh, lw)
    if device.type == "cuda":
        vae_convs(pipe, device, dtype, timer, save, args.iters, frames, lh, lw, g)
    return unet_variants(pipe, step, timer, save, time_left, device, args)


if __name__ == "__main__":
    raise SystemExit(main())
