"""Videos per second of full-size SVD-XT: the plain diffusers loop against svdrender itself, side by side.

One process renders the same batch (2 input images × 2 Euler presets, one seed per image, 4 jobs; --seeds 2: two
seeds per image, 8 jobs, and (b) renders the 4-job batch as a run of its own first), from one generated recipe
(model builtin:svd-xt-random: the full SVD-XT architecture with seeded random weights, nothing to download;
SVD_FACTS.md):
  (a) plain diffusers as the model card writes it: the pipeline built once on the GPU, then per job
      pipe(image, decode_chunk_size=8, generator=torch.manual_seed(seed)).frames[0] and export_to_video;
  (b) svdrender for each requested performance profile: `run_plan` on the recipe's plan with a real `Engine`, i.e.
      exactly what `svdrender recipe.yaml --profile P` does (pipeline load, optimize_pipeline, per-job rendering,
      mp4 encoding overlapped with the next job, sidecars, manifest, contact sheet), after an untimed warm-up plan
      of `--warmup-steps` steps on the same Engine (the compile, for compiling profiles).
Both get the same fitted input images, schedulers and seeds. It prints seconds per video, speed-up, peak VRAM,
denoising-step time, achieved TFLOP/s and the max abs difference / PSNR of (b)'s frames against (a)'s, and writes
everything to --json.

    python benchmarks/gpu_throughput.py --json out.json                       # GPU, full size: plain vs fast
    python benchmarks/gpu_throughput.py --profiles balanced,fast --json out.json
    python benchmarks/gpu_throughput.py --seeds 2 --plain-last --json out.json  # 8 jobs, and the 4-job batch
    python benchmarks/gpu_throughput.py --no-plain --profiles low,low+decode_chunk_size=4 --jobs 1 --json low.json
    python benchmarks/gpu_throughput.py --tiny --steps 3 --json /tmp/t.json   # CPU smoke test (builtin:tiny)

A profile spec is a name from renderer.speed.profiles.PROFILES, optionally with `+key=value` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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

from renderer.speed import runtime  # noqa: E402
from renderer.speed.settings import profile_settings, resolve_settings  # noqa: E402

# One SVD-XT video ≈ 4.2 PFLOP at 25 frames, 576×1024, 25 steps with CFG (SVD_FACTS.md): the UNet costs 3.2 TFLOP per
# latent frame per pass, the VAE decode 0.17 PFLOP per 25 frames. Scaled linearly in pixels (attention is not linear:
# this is an estimate).
UNET_FLOP_PER_FRAME_PASS = 3.2e12
DECODE_FLOP_PER_FRAME = 0.17e15 / 25
# svdrender's built-in presets, and what a diffusers user writes for each (renderer/scheduler_presets.py builds the same).
PRESETS = {
    "euler": {},  # the scheduler SVD ships: Euler with Karras sigmas
    "euler_exponential": {"use_karras_sigmas": False, "use_exponential_sigmas": True},
}
INPUT_IMAGES = {"astronaut": "recipes/inputs/astronaut.png", "rocket": "recipes/inputs/rocket.jpg"}
RECIPE = """\
version: 1
name: {name}
model: {model}
output: {{dir: {out}, formats: [mp4]}}
allow_inputs_outside: true   # the recipe lives in a temporary folder; the inputs are the repository's examples
defaults:
  presets: [{presets}]
  width: {width}
  height: {height}
  num_frames: {frames}
  num_inference_steps: {steps}
  decode_chunk_size: {chunk}
  min_guidance_scale: 1.0
  max_guidance_scale: 3.0
items:
{items}
"""


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
    p.add_argument("--jobs", type=int, default=None, help="render only the first N jobs of the batch")
    p.add_argument("--seeds", type=int, default=1, help="seeds per input image: 2 makes an 8-job batch; then (b)"
                   " also renders the 1-seed 4-job batch first, as its own run, and both are compared with (a)")
    p.add_argument("--warmup-steps", type=int, default=2, help="denoising steps of the untimed warm-up job")
    p.add_argument("--no-plain", action="store_true", help="skip path (a); no frame comparison")
    p.add_argument("--plain-last", action="store_true", help="run path (a) after the profiles (a profile that "
                   "fails then fails first)")
    p.add_argument("--compile-cache-dir", default=None, help="TORCHINDUCTOR_CACHE_DIR for compiling profiles")
    p.add_argument("--out-dir", default=None, help="keep recipes and renders here (default: a temporary folder)")
    return p.parse_args(argv)


def build_full_pipeline(device: torch.device, dtype: torch.dtype):
    """Full-size SVD-XT (UNet 1.52 B, temporal VAE 97.7 M, CLIP ViT-H 632 M) with seeded random weights on `device`:
    the engine's builtin:svd-xt-random, so the benchmark and `svdrender` time the same model."""
    from renderer.builtin_models import build_svd_xt_random

    pipe = build_svd_xt_random(device, dtype)
    pipe.to(device=device, dtype=dtype)
    return pipe


def fast_unet_on_gpu(**overrides):
    """The full pipeline on the GPU in fp16 with `fast`'s settings, `overrides` replacing some; a CFG batch of one
    job's UNet inputs (sample, timestep, image embedding, time ids), seeded. Returns (pipe, applied, inputs)."""
    device, dtype = torch.device("cuda"), torch.float16
    pipe = build_full_pipeline(device, dtype)
    name, vram = runtime.describe_device()
    settings = dataclasses.replace(resolve_settings("fast", name, vram), **overrides)
    applied = runtime.optimize_pipeline(pipe, settings)
    g = torch.Generator(device).manual_seed(7)
    frames, lh, lw, b = 25, 72, 128, 2
    sample = torch.randn(b, frames, 8, lh, lw, generator=g, device=device, dtype=dtype)
    emb = torch.randn(b, 1, pipe.unet.config.cross_attention_dim, generator=g, device=device, dtype=dtype)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]], device=device, dtype=dtype).repeat(b, 1)
    return pipe, applied, (sample, torch.tensor(1.2, device=device), emb, time_ids)


def write_recipe(work: Path, name: str, args, items: dict[str, list[int]], steps: int) -> Path:
    """A recipe rendering each input image (name → seeds) with every preset in PRESETS."""
    model = "builtin:tiny" if args.tiny else "builtin:svd-xt-random"
    lines = "\n".join(f"  - {{name: {item}, image: {REPO / INPUT_IMAGES[item]}, seeds: {seeds}}}"
                      for item, seeds in items.items())
    path = work / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, model=model, out=work / name, presets=", ".join(PRESETS),
                                  width=args.width, height=args.height, frames=args.frames, steps=steps,
                                  chunk=args.decode_chunk_size, items=lines))
    return path


FIRST_SEEDS = {"astronaut": 1000, "rocket": 1001}


def make_batch(work: Path, args):
    """The benchmark's plan, a one-job plan for warming up (compiling) an Engine, and with --seeds > 1 the 1-seed
    plan (the 4-job batch, its own recipe and output folder), in a fresh folder."""
    from renderer.plan import make_plan
    from renderer.recipe import load_recipe

    work.mkdir(parents=True)

    def seeds(first: int, n: int) -> list[int]:
        return [first + 2 * i for i in range(n)]  # 1000, 1002, ... and 1001, 1003, ...

    plan = make_plan(load_recipe(write_recipe(work, "batch", args, {k: seeds(v, args.seeds)
                                                                    for k, v in FIRST_SEEDS.items()}, args.steps)))
    if args.jobs:
        plan = make_plan(plan.recipe, only=tuple(j.id for j in plan.jobs[: args.jobs]))
    warm = make_plan(load_recipe(write_recipe(work, "warmup", args, {"rocket": [0]}, args.warmup_steps)),
                     only=("rocket/euler",))
    first = None
    if args.seeds > 1:
        first = make_plan(load_recipe(write_recipe(work, "first", args, {k: [v] for k, v in FIRST_SEEDS.items()},
                                                   args.steps)))
    return plan, warm, first


class StepClock:
    """Records a CUDA event after each denoising step: step time without syncing or touching the UNet."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.times: list[float] = []

    def tick(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events.append(e)
        else:
            self.times.append(time.perf_counter())

    def __call__(self, pipe, i, t, kwargs):  # callback_on_step_end
        self.tick()
        return kwargs

    def step_seconds(self) -> list[float]:
        if self.cuda:
            self.events[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.events, self.events[1:])]
        return [b - a for a, b in zip(self.times, self.times[1:])]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


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


def reset_memory(device):
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def video_flop(frames: int, unet_calls: int, height: int, width: int, cfg: bool = True) -> float:
    scale = height * width / (576 * 1024)
    return (UNET_FLOP_PER_FRAME_PASS * frames * (2 if cfg else 1) * unet_calls + DECODE_FLOP_PER_FRAME * frames) * scale


def run_plain(plan, args, device, dtype, out_dir: Path) -> tuple[dict, dict]:
    """Path (a): the model card's loop over the plan's jobs. Returns (report, uint8 frames by job id)."""
    from diffusers import EulerDiscreteScheduler
    from diffusers.utils import export_to_video

    from renderer.images import fit_image, load_image

    t0 = time.perf_counter()
    if args.tiny:
        from renderer.builtin_models import build_tiny_pipeline

        pipe = build_tiny_pipeline().to(device=device, dtype=dtype)
    else:
        pipe = build_full_pipeline(device, dtype)
    build_s = time.perf_counter() - t0
    base_config = dict(pipe.scheduler.config)
    # The same fitted input the engine renders from: the comparison is about the pipeline, not image loading.
    images = {j.id: fit_image(load_image(j.image), j.settings.width, j.settings.height, j.settings.fit)
              for j in plan.jobs}

    def call(job, steps=None, callback=None):
        s = job.settings
        pipe.scheduler = EulerDiscreteScheduler.from_config(base_config, **PRESETS[job.preset])
        return pipe(images[job.id], height=s.height, width=s.width, num_frames=s.num_frames,
                    num_inference_steps=steps or s.num_inference_steps, min_guidance_scale=s.min_guidance_scale,
                    max_guidance_scale=s.max_guidance_scale, fps=s.fps, motion_bucket_id=s.motion_bucket_id,
                    noise_aug_strength=s.noise_aug_strength, decode_chunk_size=s.decode_chunk_size,
                    generator=torch.manual_seed(job.seed), callback_on_step_end=callback).frames[0]

    t0 = time.perf_counter()
    call(plan.jobs[0], steps=args.warmup_steps)
    sync(device)
    warmup_s = time.perf_counter() - t0

    reset_memory(device)
    frames_by_job, per_job = {}, []
    t_batch = time.perf_counter()
    for job in plan.jobs:
        clock = StepClock(device)
        t0 = time.perf_counter()
        frames = call(job, callback=clock)
        t1 = time.perf_counter()
        export_to_video(frames, str(out_dir / f"plain-{job.id.replace('/', '_')}.mp4"), fps=job.settings.fps)
        t2 = time.perf_counter()
        frames_by_job[job.id] = np.stack([np.asarray(f) for f in frames])
        steps = clock.step_seconds()
        per_job.append({"job": job.id, "call_s": round(t1 - t0, 3), "export_s": round(t2 - t1, 3),
                        "total_s": round(t2 - t0, 3), "step_s_median": round(statistics.median(steps), 4)})
    batch_s = time.perf_counter() - t_batch
    report = {"build_s": round(build_s, 1), "warmup_s": round(warmup_s, 2), "batch_s": round(batch_s, 3),
              "jobs": per_job, **memory_stats(device)}
    pipe = None  # frees the GPU for path (b): its Engine builds its own pipeline
    reset_memory(device)
    return report, frames_by_job


def parse_spec(spec: str) -> dict:
    name, *pairs = spec.split("+")
    request = {"profile": name}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        request[key] = {"true": True, "false": False, "none": None}.get(raw.lower(), int(raw) if raw.isdigit() else raw)
    return request


def run_profile(spec: str, work: Path, args, device) -> tuple[dict, dict]:
    """Path (b) for one profile spec: svdrender's run_plan with a real Engine, after a warm-up plan on it; returns
    the report and each job's frames."""
    from renderer.batch import run_plan
    from renderer.engine import Engine

    plan, warm, first = make_batch(work, args)

    class RecordingEngine(Engine):
        """The real Engine, keeping each job's frames and per-step CUDA events for the comparison."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.frames: dict = {}
            self.steps: dict = {}

        def render(self, job, on_step=None):
            clock = StepClock(device)

            def step(i, n):
                clock.tick()
                if on_step is not None:
                    on_step(i, n)

            rendered = super().render(job, on_step=step)
            self.frames[job.id] = rendered.frames
            self.steps[job.id] = clock.step_seconds()
            return rendered

    request = parse_spec(spec)
    if args.compile_cache_dir:
        request.setdefault("compile_cache_dir", args.compile_cache_dir)
    from renderer.speed.profiles import JobWork, Shape

    # Every PerformanceSettings field can be set here (the lab's ablations), not only what a recipe may ask for.
    name, vram = runtime.describe_device() if device.type == "cuda" else ("cpu", 0.0)
    work = [JobWork(Shape(j.settings.width, j.settings.height, j.settings.num_frames), j.settings.num_inference_steps)
            for j in plan.jobs]
    settings = resolve_settings(request["profile"], name, vram, work,
                                **{k: v for k, v in request.items() if k != "profile"})
    engine = RecordingEngine(plan.recipe.model, device=device.type, base_dir=plan.recipe.path.parent,
                             performance=settings, jobs=plan.jobs)
    t0 = time.perf_counter()
    warm_run = run_plan(warm, engine=engine, quiet=True)
    sync(device)
    warmup_s = time.perf_counter() - t0
    assert warm_run.exit_code == 0, [r.detail for r in warm_run.results]

    def timed(plan) -> dict:
        t0 = time.perf_counter()
        run = run_plan(plan, engine=engine, quiet=True)
        batch_s = time.perf_counter() - t0
        assert run.exit_code == 0, [r.detail for r in run.results]
        per_job = []
        for r in run.results:
            steps = engine.steps[r.job.id]
            per_job.append({"job": r.job.id, "timings": r.sidecar["timings"],
                            "step_s_median": round(statistics.median(steps), 4) if steps else None})
        return {"batch_s": round(batch_s, 3), "jobs": per_job}

    reset_memory(device)
    # The 4-job batch as a run of its own (its last video's encode is its tail), then the whole batch.
    first_batch = timed(first) if first is not None else None
    report = {
        "request": request,
        "performance": engine.performance.to_json(),
        "load_s": engine.info.load_seconds,
        "warmup_s": round(warmup_s, 2),
        **timed(plan),
        **memory_stats(device),
    }
    if first_batch is not None:
        report["first_batch"] = first_batch
    frames = engine.frames
    engine = None  # frees the GPU for the next path
    reset_memory(device)
    return report, frames


def summarize(name: str, rep: dict, n: int, flop: float | None, plain_spv: float | None) -> dict:
    spv = rep["batch_s"] / n
    steps = [j["step_s_median"] for j in rep["jobs"] if j["step_s_median"]]
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
        from renderer.builtin_models import TINY_NUM_FRAMES, TINY_VAE_SCALE

        args.frames = args.frames or TINY_NUM_FRAMES
        args.height = args.height or 16 * TINY_VAE_SCALE
        args.width = args.width or 16 * TINY_VAE_SCALE
    else:
        args.frames, args.height, args.width = args.frames or 25, args.height or 576, args.width or 1024
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    # The dtype every GPU profile renders in (the engine's float32 on a CPU), so both paths compute alike.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    import diffusers

    work = Path(args.out_dir or tempfile.mkdtemp(prefix="svdr-bench-"))
    plan, _, first = make_batch(work / "plain", args)
    n = len(plan.jobs)

    device_name, vram = runtime.describe_device() if device.type == "cuda" else ("cpu", 0.0)
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])),
        "device": device_name,
        "vram_gib": round(vram, 1),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "python": sys.version.split()[0]},
        "config": {"frames": args.frames, "height": args.height, "width": args.width, "steps": args.steps,
                   "decode_chunk_size": args.decode_chunk_size, "dtype": str(dtype).removeprefix("torch."),
                   "cfg": [1.0, 3.0], "jobs": [{"id": j.id, "seed": j.seed} for j in plan.jobs],
                   "random_weights": True, "tiny": args.tiny},
        "auto_settings": profile_settings("auto", device_name, vram).as_dict(),
        "paths": {},
    }

    def save():
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)

    flop = None if args.tiny else video_flop(args.frames, args.steps, args.height, args.width)

    def plain_path():
        plain, reference = run_plain(plan, args, device, dtype, work / "plain")
        report["paths"]["plain"] = plain
        print(f"plain: batch {plain['batch_s']} s", flush=True)
        save()
        return reference

    reference = plain_path() if not args.no_plain and not args.plain_last else {}
    frames_by_spec = {}
    for i, spec in enumerate(s.strip() for s in args.profiles.split(",") if s.strip()):
        report["paths"][spec], frames_by_spec[spec] = run_profile(spec, work / f"profile-{i}", args, device)
        print(f"{spec}: batch {report['paths'][spec]['batch_s']} s", flush=True)
        save()
    if not args.no_plain and args.plain_last:
        reference = plain_path()
    plain = report["paths"].get("plain")
    rows = [summarize("plain", plain, n, flop, None)] if plain else []
    plain_spv = rows[0]["s_per_video"] if rows else None
    for spec, frames in frames_by_spec.items():
        rep = report["paths"][spec]
        rep["accuracy_vs_plain"] = {jid: compare(f, reference[jid]) for jid, f in frames.items() if jid in reference}
        rows.append(summarize(spec, rep, n, flop, plain_spv))
    if first is not None:
        # (a)'s jobs run one after another with nothing carried over, so its 1-seed jobs' own times are what the
        # 4-job batch takes in (a); (b) rendered that batch as a run of its own.
        ids = {j.id for j in first.jobs}
        k = len(ids)
        plain_first = ({"batch_s": round(sum(j["total_s"] for j in plain["jobs"] if j["job"] in ids), 3),
                        "jobs": [j for j in plain["jobs"] if j["job"] in ids], "warmup_s": plain["warmup_s"]}
                       if plain else None)
        if plain_first:
            rows.append(summarize(f"plain, first {k} jobs", plain_first, k, flop, None))
        for spec in frames_by_spec:
            rep = dict(report["paths"][spec]["first_batch"], warmup_s=report["paths"][spec]["warmup_s"])
            rows.append(summarize(f"{spec}, {k}-job batch", rep, k, flop,
                                  plain_first["batch_s"] / k if plain_first else None))
    report["summary"] = rows
    save()

    print(f"\n{device_name}, torch {torch.__version__}, diffusers {diffusers.__version__}; {n} jobs, "
          f"{args.frames} frames {args.width}x{args.height}, {args.steps} steps, decode chunk {args.decode_chunk_size}")
    cols = ["path", "s_per_video", "speedup", "step_s", "tflops", "peak_allocated_gib", "peak_reserved_gib",
            "max_abs_diff", "min_psnr_db", "warmup_s"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c, "")) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
