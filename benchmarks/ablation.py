"""`fast` piece by piece: each hand-written piece switched off alone, and the library alternatives switched on, in one
run on one GPU, through the real Engine and run_plan (what `svdrender recipe.yaml --profile fast` runs).

Compiling dominates: every variant compiles its own UNet (3-4 minutes alone). So the variants compile side by side,
one process each, `--parallel` at a time (each holds ~15-20 GiB of GPU memory), into one fresh compile cache; once
every process of a wave has compiled and run its warm-up job (or `--deadline` passed: a variant still compiling is
stopped and reported as such), they render the timed job one at a time on an otherwise idle GPU. The timed job is
the benchmark batch's first (1024×576 × 25 frames, Euler, `--steps` steps, decode chunk 8); its frames are
compared with `off`'s (plain diffusers in fp16). "warm-up" is the variant's model build, optimize_pipeline, compile
and a 2-step job, under the contention of the other compiles: a diagnosis of relative compile cost, not a start-up
time (benchmarks/cli_command.py measures those).

    python benchmarks/ablation.py --variants off,fast,no_fused_geglu,reduce_overhead --json ablation.json
    python benchmarks/ablation.py --list
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# name → (profile, overrides on it): each `fast` piece off alone, then the library alternatives. (The pieces the
# first run of this script deleted, and their numbers, are in benchmarks/README.md.)
VARIANTS = {
    "off": ("off", {}),
    "fast": ("fast", {}),
    "no_fused_geglu": ("fast", {"fused_geglu": False}),
    "max_autotune_no_cudagraphs": ("fast", {"fused_geglu": False, "compile_mode": "max-autotune-no-cudagraphs"}),
    "reduce_overhead": ("fast", {"compile_mode": "reduce-overhead"}),
    "no_channel_stats_group_norm": ("fast", {"channel_stats_group_norm": False}),
    "no_efficient_temporal_attention": ("fast", {"efficient_temporal_attention": False}),
    "sdpa_flash": ("fast", {"efficient_temporal_attention": False, "attention_backend": "flash"}),
    "no_cross_attention_shortcut": ("fast", {"cross_attention_shortcut": False}),
    "no_vae_compile": ("fast", {"compile_vae": False}),
    "regional": ("fast", {"compile_regions": True}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from --list")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--json", help="write results here")
    p.add_argument("--parallel", type=int, default=0, help="variants compiling at once (0: by GPU memory)")
    p.add_argument("--deadline", type=float, default=420, help="seconds a wave may compile before the laggards stop")
    p.add_argument("--budget", type=float, default=560, help="start no wave that could end after this many seconds")
    p.add_argument("--steps", type=int, default=12, help="denoising steps of the timed job")
    p.add_argument("--tiny", action="store_true", help="builtin tiny pipeline (CPU smoke test)")
    return p.parse_args(argv)


def batch_args(args, work: Path):
    """gpu_throughput's batch options: one image, one seed, the timed job only."""
    tiny = args.tiny
    return argparse.Namespace(tiny=tiny, steps=args.steps, frames=8 if tiny else 25, height=64 if tiny else 576,
                              width=64 if tiny else 1024, decode_chunk_size=8, jobs=1, seeds=1, warmup_steps=2,
                              out_dir=str(work))


def worker(name: str, args, work: Path, cache: Path, inbox, outbox) -> None:
    """One variant: build, optimise and warm up an Engine, say "ready", wait for "go", render the timed job."""
    try:
        import numpy as np
        import torch

        from gpu_throughput import StepClock, make_batch, memory_stats, reset_memory, sync
        from renderer.speed import runtime
        from renderer.speed.settings import resolve_settings
        from renderer.batch import run_plan
        from renderer.engine import Engine

        device = torch.device("cpu" if args.tiny else "cuda")
        plan, warm, _ = make_batch(work / name, batch_args(args, work))
        profile, overrides = VARIANTS[name]
        dev_name, vram = runtime.describe_device() if device.type == "cuda" else ("cpu", 0.0)
        # Every variant compiles into the one cache (optimize_pipeline points Inductor at it); `off` compiles nothing.
        settings = resolve_settings(profile, dev_name, vram, compile_cache_dir=str(cache), **overrides)
        steps: dict = {}
        frames: dict = {}

        class Timed(Engine):
            def render(self, job, on_step=None):
                clock = StepClock(device)
                rendered = super().render(job, on_step=lambda i, n: clock.tick())
                steps[job.id], frames[job.id] = clock.step_seconds(), rendered.frames
                return rendered

        engine = Timed(plan.recipe.model, device=device.type, base_dir=plan.recipe.path.parent,
                       performance=settings, jobs=plan.jobs)
        t0 = time.perf_counter()
        run = run_plan(warm, engine=engine, quiet=True)
        sync(device)
        assert run.exit_code == 0, [r.detail for r in run.results]
        warmup_s = time.perf_counter() - t0
        outbox.put((name, "ready", None))
        inbox.get()  # "go": the GPU is ours alone
        reset_memory(device)
        run = run_plan(plan, engine=engine, quiet=True)
        assert run.exit_code == 0, [r.detail for r in run.results]
        job = run.results[0]
        np.save(work / f"{name}.npy", frames[job.job.id])
        timings = job.sidecar["timings"]
        outbox.put((name, "done", {
            "profile": profile, "overrides": overrides, "warmup_s": round(warmup_s, 1),
            "step_s_median": round(statistics.median(steps[job.job.id]), 4),
            "gpu_path_s": round(sum(timings.get(k, 0.0) for k in ("prepare", "denoise", "decode")), 3),
            "decode_s": timings.get("decode"),
            "applied": list(engine.performance.applied), "skipped": list(engine.performance.skipped),
            **memory_stats(device),
        }))
    except BaseException as exc:  # report, then let the parent go on with the others
        outbox.put((name, "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000],
                                     "traceback": traceback.format_exc()[-3000:]}))


def gpu_parallel() -> int:
    import torch

    if not torch.cuda.is_available():
        return 2
    free, _ = torch.cuda.mem_get_info()
    return max(1, int(free / 2**30 // 18))


def run_wave(names: list[str], args, work: Path, cache: Path, results: dict) -> None:
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    procs, inboxes = {}, {}
    for name in names:
        inboxes[name] = ctx.Queue()
        procs[name] = ctx.Process(target=worker, args=(name, args, work, cache, inboxes[name], outbox), daemon=True)
        procs[name].start()
    ready: list[str] = []
    pending = set(names)
    deadline = time.monotonic() + args.deadline
    while pending and time.monotonic() < deadline:
        try:
            name, state, data = outbox.get(timeout=5)
        except Exception:
            continue
        pending.discard(name)
        if state == "ready":
            ready.append(name)
        else:
            results[name] = data
    for name in pending:  # still compiling at the deadline
        procs[name].kill()
        results[name] = {"error": f"not ready within the {args.deadline:.0f} s deadline (compiling)"}
    for name in ready:
        inboxes[name].put("go")
        try:
            got, state, data = outbox.get(timeout=180)
        except Exception:
            procs[name].kill()
            results[name] = {"error": "no result within 180 s of its turn"}
            continue
        results[got] = data
        procs[got].join(timeout=60)
        print(json.dumps({got: {k: v for k, v in data.items() if k not in ("applied", "skipped", "traceback")}}),
              flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, (profile, overrides) in VARIANTS.items():
            print(f"{name:32} {profile} {overrides}")
        return 0
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; see --list")
    import numpy as np

    from gpu_throughput import compare

    parallel = args.parallel or gpu_parallel()
    work = Path(tempfile.mkdtemp(prefix="svdr-ablation-"))
    cache = work / "compile-cache"
    results: dict = {}
    start = time.perf_counter()
    # Compile threads shared out between the processes compiling at once; `off` compiles nothing and renders last,
    # alone, so that its eager activations do not crowd the compiled variants' GPU memory.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(2, (os.cpu_count() or 2) // parallel)))
    compiled = [n for n in names if n != "off"]
    waves = [compiled[i: i + parallel] for i in range(0, len(compiled), parallel)] + ([["off"]] if "off" in names
                                                                                         else [])
    for wave in waves:
        if wave != ["off"] and time.perf_counter() - start + args.deadline + 15 * len(wave) > args.budget:
            results.update({n: {"error": "not run: the time budget would not cover its wave"} for n in wave})
            continue
        run_wave(wave, args, work, cache, results)
    ref_path = work / "off.npy"
    if ref_path.is_file():
        ref = np.load(ref_path)
        for name, rep in results.items():
            path = work / f"{name}.npy"
            if name != "off" and "error" not in rep and path.is_file():
                rep["frames_vs_off"] = compare(np.load(path), ref)
    fast = results.get("fast", {}).get("step_s_median")
    for rep in results.values():
        if fast and rep.get("step_s_median"):
            rep["step_vs_fast"] = round(rep["step_s_median"] / fast - 1, 4)
    report = {"parallel": parallel, "steps": args.steps, "wall_s": round(time.perf_counter() - start, 1),
              "results": results}
    import torch

    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name(0)
        report["torch"] = torch.__version__
    print(json.dumps({n: {k: r.get(k) for k in ("step_s_median", "step_vs_fast", "gpu_path_s", "warmup_s",
                                                 "frames_vs_off", "error")} for n, r in results.items()}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
