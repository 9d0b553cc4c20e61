"""Videos per second of full-size SVD-XT: the plain diffusers loop against svdrender's optimised path, side by side.

One process builds the full SVD-XT architecture with seeded random weights (nothing to download; SVD_FACTS.md), then
renders the same batch of jobs (input images × Euler presets, one seed per job) with
  (a) plain diffusers as the model card writes it: pipe(image, generator=torch.manual_seed(seed)), export_to_video;
  (b) each requested performance profile: optimize_pipeline() once, then per job call_context() around pipe(),
      frames converted to uint8 on the GPU and mp4s encoded on a background thread while the next job renders.
It prints seconds per video, speed-up, peak VRAM, denoising-step time, achieved TFLOP/s and the max abs difference /
PSNR of (b)'s frames against (a)'s, and writes everything to --json.

(b) drives the pipeline the way renderer/engine.py does, not through Engine itself: Engine loads models by recipe
ModelSpec and cannot take this random-weight pipeline yet.

    python benchmarks/gpu_throughput.py --json out.json                       # GPU, full size: plain vs fast
    python benchmarks/gpu_throughput.py --profiles balanced,fast --json out.json
    python benchmarks/gpu_throughput.py --profiles low,low+decode_chunk_size=8 --jobs 1 --json low.json
    python benchmarks/gpu_throughput.py --tiny --steps 3 --json /tmp/t.json   # CPU smoke test (builtin:tiny)

A profile spec is a name from renderer.performance.PROFILES, optionally with `+key=value` overrides.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from renderer import performance  # noqa: E402

# One SVD-XT video ≈ 4.2 PFLOP at 25 frames, 576×1024, 25 steps with CFG (SVD_FACTS.md): the UNet costs 3.2 TFLOP per
# latent frame per pass, the VAE decode 0.17 PFLOP per 25 frames. Scaled linearly in pixels (attention is not linear:
# this is an estimate).
UNET_FLOP_PER_FRAME_PASS = 3.2e12
DECODE_FLOP_PER_FRAME = 0.17e15 / 25
PRESETS = {
    "euler": {},  # the scheduler SVD ships: Euler with Karras sigmas
    "euler-exponential": {"use_karras_sigmas": False, "use_exponential_sigmas": True},
}
INPUT_IMAGES = ("recipes/inputs/astronaut.png", "recipes/inputs/rocket.jpg")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="write results here")
    p.add_argument("--profiles", default="fast", help="comma-separated profile specs for path (b)")
    p.add_argument("--tiny", action="store_true", help="builtin tiny pipeline (CPU smoke test)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--frames", type=int, default=None, help="default 25 (8 with --tiny)")
    p.add_argument("--height", type=int, default=None, help="default 576 (64 with --tiny)")
    p.add_argument("--width", type=int, default=None, help="default 1024 (64 with --tiny)")
    p.add_argument("--decode-chunk-size", type=int, default=8)
    p.add_argument("--dtype", default=None, help="plain path dtype (default float16 on GPU, float32 on CPU)")
    p.add_argument("--jobs", type=int, default=None, help="render only the first N jobs of the batch")
    p.add_argument("--warmup-steps", type=int, default=2, help="denoising steps of the untimed warm-up job")
    p.add_argument("--no-plain", action="store_true", help="skip path (a); no frame comparison")
    p.add_argument("--compile-cache-dir", default=None, help="TORCHINDUCTOR_CACHE_DIR for compiling profiles")
    p.add_argument("--out-dir", default=None, help="keep the mp4s here (default: a temporary folder)")
    return p.parse_args(argv)


def build_full_pipeline(device: torch.device, dtype: torch.dtype):
    """Full-size SVD-XT (UNet 1.52 B, temporal VAE 97.7 M, CLIP ViT-H 632 M) with seeded random weights on `device`:
    the engine's builtin:svd-xt-random, so the benchmark and `svdrender` time the same model."""
    from renderer.tiny import build_svd_xt_random

    pipe = build_svd_xt_random(device, dtype)
    pipe.to(device=device, dtype=dtype)
    return pipe


def load_inputs(width: int, height: int):
    """The two example input images fitted to width×height (synthetic gradients if the files are missing)."""
    from PIL import Image

    from renderer.images import fit_image, load_image

    out = []
    for i, rel in enumerate(INPUT_IMAGES):
        path = REPO / rel
        if path.exists():
            out.append((path.stem, fit_image(load_image(path), width, height, "crop")))
        else:
            y, x = np.mgrid[0:height, 0:width]
            rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 60 * i)], -1)
            out.append((f"gradient{i}", Image.fromarray(rgb.astype(np.uint8))))
    return out


def make_jobs(inputs, n: int | None):
    jobs = []
    for preset in PRESETS:
        for name, image in inputs:
            jobs.append({"id": f"{name}-{preset}", "image": image, "preset": preset, "seed": 1000 + len(jobs)})
    return jobs[:n] if n else jobs


def set_scheduler(pipe, base_config, preset: str):
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(base_config, **PRESETS[preset])


class StepClock:
    """callback_on_step_end that records a CUDA event per step: step time without syncing or touching the UNet."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.times: list[float] = []
        self.denoise_peak = 0

    def __call__(self, pipe, i, t, kwargs):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events.append(e)
            # The allocator's counters are host-side: reading them does not wait for the GPU.
            self.denoise_peak = torch.cuda.max_memory_allocated()
        else:
            self.times.append(time.perf_counter())
        return kwargs

    def step_seconds(self) -> list[float]:
        if self.cuda:
            self.events[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.events, self.events[1:])]
        return [b - a for a, b in zip(self.times, self.times[1:])]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_mp4(frames_uint8: np.ndarray, path: str, fps: int = 7) -> str:
    """uint8 [F, H, W, 3] → mp4 with the same writer settings as diffusers.utils.export_to_video."""
    import imageio

    with imageio.get_writer(path, fps=fps, quality=5.0, bitrate=None, macro_block_size=16) as writer:
        for frame in frames_uint8:
            writer.append_data(frame)
    return path


def pil_frames_to_uint8(frames) -> np.ndarray:
    return np.stack([np.asarray(f) for f in frames])


def compare(a: np.ndarray, ref: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - ref.astype(np.int16))
    mse = float(np.mean(d.astype(np.float64) ** 2))
    return {
        "max_abs_diff": int(d.max()),
        "mean_abs_diff": round(float(d.mean()), 4),
        "psnr_db": round(10 * math.log10(255**2 / mse), 2) if mse > 0 else float("inf"),
        "identical": bool(mse == 0),
    }


def memory_stats(device) -> dict:
    if device.type != "cuda":
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def job_peaks(per_job) -> dict:
    keys = ("peak_allocated_gib", "peak_reserved_gib", "denoise_peak_allocated_gib")
    return {k: max(j[k] for j in per_job) for k in keys if all(k in j for j in per_job)}


def reset_memory(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def video_flop(frames: int, unet_calls: int, height: int, width: int, cfg: bool = True) -> float:
    scale = height * width / (576 * 1024)
    return (UNET_FLOP_PER_FRAME_PASS * frames * (2 if cfg else 1) * unet_calls + DECODE_FLOP_PER_FRAME * frames) * scale


def call_kwargs(args, job, generator, decode_chunk_size):
    return dict(
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=args.steps,
        min_guidance_scale=1.0,
        max_guidance_scale=3.0,
        decode_chunk_size=decode_chunk_size,
        generator=generator,
    )


def run_plain(pipe, jobs, args, device, base_config, out_dir) -> tuple[dict, dict]:
    """Path (a): the model card's loop. Returns (report, uint8 frames by job id)."""
    from diffusers.utils import export_to_video

    warm = jobs[0]
    set_scheduler(pipe, base_config, warm["preset"])
    t0 = time.perf_counter()
    pipe(warm["image"], **{**call_kwargs(args, warm, torch.manual_seed(0), args.decode_chunk_size),
                           "num_inference_steps": args.warmup_steps})
    sync(device)
    warmup_s = time.perf_counter() - t0

    reset_memory(device)
    frames_by_job, per_job = {}, []
    t_batch = time.perf_counter()
    for job in jobs:
        clock = StepClock(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        set_scheduler(pipe, base_config, job["preset"])
        frames = pipe(
            job["image"],
            **call_kwargs(args, job, torch.manual_seed(job["seed"]), args.decode_chunk_size),
            callback_on_step_end=clock,
        ).frames[0]
        t1 = time.perf_counter()
        export_to_video(frames, os.path.join(out_dir, f"plain-{job['id']}.mp4"), fps=7)
        t2 = time.perf_counter()
        frames_by_job[job["id"]] = pil_frames_to_uint8(frames)
        steps = clock.step_seconds()
        per_job.append({"job": job["id"], "call_s": round(t1 - t0, 3), "export_s": round(t2 - t1, 3),
                        "total_s": round(t2 - t0, 3), "step_s_median": round(statistics.median(steps), 4),
                        "unet_calls": len(steps) + 1, "denoise_peak_allocated_gib": round(clock.denoise_peak / 2**30, 2), **memory_stats(device)})
    batch_s = time.perf_counter() - t_batch
    report = {"warmup_s": round(warmup_s, 2), "batch_s": round(batch_s, 3), "jobs": per_job, **job_peaks(per_job)}
    return report, frames_by_job


def run_profile(pipe, spec: str, jobs, args, device, base_config, out_dir, reference) -> dict:
    """Path (b) for one profile spec: optimise in place, warm up (compiles), then render the batch."""
    name, *pairs = spec.split("+")
    overrides = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        overrides[key] = {"true": True, "false": False, "none": None}.get(raw.lower(), int(raw) if raw.isdigit() else raw)
    if args.compile_cache_dir:
        overrides.setdefault("compile_cache_dir", args.compile_cache_dir)
    device_name, vram = performance.describe_device() if device.type == "cuda" else ("cpu", 0.0)
    settings = performance.resolve_settings(name, device_name, vram, **overrides)

    reset_memory(device)
    t0 = time.perf_counter()
    record = performance.optimize_pipeline(pipe, settings)
    optimize_s = time.perf_counter() - t0
    chunk = performance.effective_decode_chunk_size(settings, args.decode_chunk_size)
    output_type = "pt" if settings.gpu_postprocess else "pil"

    def render(job, generator, steps=None, clock=None):
        set_scheduler(pipe, base_config, job["preset"])
        kw = call_kwargs(args, job, generator, chunk)
        if steps:
            kw["num_inference_steps"] = steps
        with torch.inference_mode(), performance.call_context(settings):
            out = pipe(job["image"], output_type=output_type, callback_on_step_end=clock, **kw).frames[0]
        return performance.frames_to_uint8(out) if output_type == "pt" else pil_frames_to_uint8(out)

    t0 = time.perf_counter()
    render(jobs[0], torch.Generator("cpu").manual_seed(0), steps=args.warmup_steps)
    sync(device)
    warmup_s = time.perf_counter() - t0
    peak_with_warmup = memory_stats(device)

    reset_memory(device)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if settings.background_encode else None
    pending, per_job, results = [], [], {}
    t_batch = time.perf_counter()
    for job in jobs:
        clock = StepClock(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        frames = render(job, torch.Generator("cpu").manual_seed(job["seed"]), clock=clock)
        t1 = time.perf_counter()
        path = os.path.join(out_dir, f"{spec}-{job['id']}.mp4")
        if pool:
            pending.append(pool.submit(write_mp4, frames, path))
        else:
            write_mp4(frames, path)
        t2 = time.perf_counter()
        results[job["id"]] = frames
        steps = clock.step_seconds()
        per_job.append({"job": job["id"], "call_s": round(t1 - t0, 3), "export_s": round(t2 - t1, 3),
                        "total_s": round(t2 - t0, 3), "step_s_median": round(statistics.median(steps), 4),
                        "unet_calls": len(steps) + 1, "denoise_peak_allocated_gib": round(clock.denoise_peak / 2**30, 2), **memory_stats(device)})
    for f in pending:
        f.result()
    batch_s = time.perf_counter() - t_batch
    if pool:
        pool.shutdown()
    accuracy = {jid: compare(frames, reference[jid]) for jid, frames in results.items() if jid in reference}
    return {
        "settings": settings.as_dict(),
        "applied": record["applied"],
        "skipped": record["skipped"],
        "optimize_s": round(optimize_s, 2),
        "warmup_s": round(warmup_s, 2),
        "batch_s": round(batch_s, 3),
        "jobs": per_job,
        "accuracy_vs_plain": accuracy,
        "peak_including_warmup": peak_with_warmup,
        **job_peaks(per_job),
    }


def summarize(name: str, rep: dict, n: int, flop: float | None, plain_spv: float | None) -> dict:
    spv = rep["batch_s"] / n
    steps = [j["step_s_median"] for j in rep["jobs"]]
    row = {"path": name, "s_per_video": round(spv, 3), "videos_per_min": round(60 / spv, 2),
           "step_s": round(statistics.median(steps), 4), "warmup_s": rep["warmup_s"],
           "peak_allocated_gib": rep.get("peak_allocated_gib"), "peak_reserved_gib": rep.get("peak_reserved_gib")}
    if flop:
        row["tflops"] = round(flop / spv / 1e12, 1)
    if plain_spv:
        row["speedup"] = round(plain_spv / spv, 3)
    acc = rep.get("accuracy_vs_plain")
    if acc:
        row["max_abs_diff"] = max(a["max_abs_diff"] for a in acc.values())
        row["min_psnr_db"] = min(a["psnr_db"] for a in acc.values())
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tiny:
        from renderer.tiny import TINY_NUM_FRAMES, TINY_VAE_SCALE, build_tiny_pipeline

        args.frames = args.frames or TINY_NUM_FRAMES
        args.height = args.height or 16 * TINY_VAE_SCALE
        args.width = args.width or 16 * TINY_VAE_SCALE
    else:
        args.frames, args.height, args.width = args.frames or 25, args.height or 576, args.width or 1024
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))

    import diffusers

    t0 = time.perf_counter()
    if args.tiny:
        pipe = build_tiny_pipeline().to(device=device, dtype=dtype)
    else:
        pipe = build_full_pipeline(device, dtype)
    build_s = time.perf_counter() - t0
    base_config = dict(pipe.scheduler.config)
    jobs = make_jobs(load_inputs(args.width, args.height), args.jobs)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="svdr-bench-")
    os.makedirs(out_dir, exist_ok=True)

    device_name, vram = performance.describe_device() if device.type == "cuda" else ("cpu", 0.0)
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])),
        "device": device_name,
        "vram_gib": round(vram, 1),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
                     "python": sys.version.split()[0]},
        "config": {"frames": args.frames, "height": args.height, "width": args.width, "steps": args.steps,
                   "decode_chunk_size": args.decode_chunk_size, "dtype": str(dtype).removeprefix("torch."),
                   "cfg": [1.0, 3.0], "jobs": [{k: j[k] for k in ("id", "preset", "seed")} for j in jobs],
                   "random_weights": True, "tiny": args.tiny},
        "build_s": round(build_s, 1),
        "auto_settings": performance.auto_settings(device_name, vram).as_dict(),
        "paths": {},
    }

    def save():
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)

    flop = None if args.tiny else video_flop(args.frames, args.steps, args.height, args.width)
    rows, reference, plain_spv = [], {}, None
    if not args.no_plain:
        plain, reference = run_plain(pipe, jobs, args, device, base_config, out_dir)
        report["paths"]["plain"] = plain
        rows.append(summarize("plain", plain, len(jobs), flop, None))
        plain_spv = rows[-1]["s_per_video"]
        print(f"plain: {json.dumps(rows[-1])}", flush=True)
        save()
    for spec in [s.strip() for s in args.profiles.split(",") if s.strip()]:
        rep = run_profile(pipe, spec, jobs, args, device, base_config, out_dir, reference)
        report["paths"][spec] = rep
        rows.append(summarize(spec, rep, len(jobs), flop, plain_spv))
        print(f"{spec}: {json.dumps(rows[-1])}", flush=True)
        save()
    report["summary"] = rows
    save()

    print(f"\n{device_name}, torch {torch.__version__}, diffusers {diffusers.__version__}; {len(jobs)} jobs, "
          f"{args.frames} frames {args.width}x{args.height}, {args.steps} steps, decode chunk {args.decode_chunk_size}")
    cols = ["path", "s_per_video", "speedup", "step_s", "tflops", "peak_allocated_gib", "peak_reserved_gib",
            "max_abs_diff", "min_psnr_db", "warmup_s"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c, "")) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
