"""Which Inductor settings make the compiled `fast` UNet's own kernels faster: one block at a time, side by side.

Compiling the whole UNet takes minutes, so this compiles single blocks of it (the spatio-temporal transformers and
ResNet blocks of each level) under each Inductor setting, on the inputs they receive in a real step, and times each
as a replayed CUDA graph, as `fast` runs it; `--jobs-per-call 1,2` also times them with two jobs' CFG pairs in one
call. A block alone is not the block inside the UNet (Inductor lays out a graph with convolutions channels-last), so
a setting that wins on blocks is then checked on the whole UNet (`--blocks unet`). Every output is compared with the
eager block's.

    python benchmarks/inductor_configs.py --json configs.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

# torch.compile `options`: Inductor config keys.
VARIANTS = {
    "default": {},
    # Layer norms fused with a permuted load or store get ReductionHint.DEFAULT, whose persistent-reduction limit is
    # 64 elements, so 320-1,280-channel norms are generated as two-pass loops. multi_kernel raises the limit 16x
    # and generates both forms, picking the faster one by timing them on the first call.
    "multi_kernel": {"triton.multi_kernel": 1},
    # Inductor times block-size neighbours of each kernel's heuristic configuration at compile time.
    "coordinate_descent": {"coordinate_descent_tuning": True},
    "multi_kernel+coordinate_descent": {"triton.multi_kernel": 1, "coordinate_descent_tuning": True},
    # No runtime choice (multi_kernel's loading fails on an FX-graph cache hit): every reduction of <= 1,024 elements made
    # persistent whatever its hint, through Inductor's heuristics hook (PersistentReductions below).
    "persistent_1024": {"fx_graph_cache": False},  # the cache key does not see the hook
    # The same for reductions whose hint is DEFAULT only (mixed or non-contiguous accesses, as the layer norms');
    # OUTER ones (a strided reduction axis, e.g. statistics over positions of channels-last activations) keep
    # Inductor's choice.
    "persistent_1024_default_hint": {"fx_graph_cache": False},
}
# The variants that compile under the heuristics hook: name -> DEFAULT-hinted reductions only.
PERSISTENT = {"persistent_1024": False, "persistent_1024_default_hint": True}
BLOCKS = {
    "transformer_320": "down_blocks.0.attentions.0",
    "resnet_320": "down_blocks.0.resnets.0",
    "up_transformer_320": "up_blocks.3.attentions.2",
    "transformer_1280": "down_blocks.2.attentions.0",
    "transformer_640": "down_blocks.1.attentions.0",
    "resnet_640": "down_blocks.1.resnets.0",
    "resnet_1280": "down_blocks.2.resnets.0",
    "resnet_1280_144": "down_blocks.3.resnets.0",  # the lowest resolution: 144 latent positions
    # The whole UNet (minutes to compile): Inductor picks channels-last layouts for a graph with convolutions, which a
    # transformer block compiled alone does not have, so a block's reductions can differ from the same block's here.
    "unet": "",
}


def persistent_reductions(default_hint_only: bool = False):
    """Inductor's choices with the 1,024-element persistent-reduction limit for every hint (or for DEFAULT-hinted
    reductions only), as a context manager."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.runtime.hints import ReductionHint
    from torch._inductor.virtualized import V

    class PersistentReductions(InductorChoices):
        def should_use_persistent_reduction(self, features, *args, **kwargs):
            if InductorChoices.should_use_persistent_reduction(features, *args, **kwargs):
                return True
            if default_hint_only and features.get_reduction_hint() != ReductionHint.DEFAULT:
                return False
            return V.graph.sizevars.statically_known_leq(features.reduction_numel, 1024)

    return V.set_choices_handler(PersistentReductions())


def capture_inputs(unet, names, call):
    """Each named block's (args, kwargs) in one eager UNet call, cloned."""
    seen: dict = {}
    clone = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
    hooks = [unet.get_submodule(path).register_forward_pre_hook(
        lambda m, a, kw, name=name: seen.setdefault(name, ([clone(x) for x in a], {k: clone(v) for k, v in kw.items()})),
        with_kwargs=True) for name, path in names.items()]
    try:
        call()
    finally:
        for h in hooks:
            h.remove()
    return seen


def repeat_jobs(args, kwargs, jobs: int):
    """A block's inputs for `jobs` jobs in one call: every batch-first tensor repeated along dim 0 (the CFG pairs of
    several jobs, as a batched call would stack them; frame-major [B*F, ...] tensors stay job-major)."""
    rep = lambda v: torch.cat([v] * jobs) if isinstance(v, torch.Tensor) and v.dim() > 0 else v  # noqa: E731
    return [rep(x) for x in args], {k: rep(v) for k, v in kwargs.items()}


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    return out.sample


def time_graph(fn, iters: int, profile_rows: int = 0):
    """Median ms of `fn` replayed as a CUDA graph (warmed up on a side stream first); with `profile_rows`, also the
    replay's kernel breakdown (that many top kernels), as (ms, breakdown)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    if not profile_rows:
        return times[len(times) // 2]
    from gpu_explore import kernel_breakdown

    return times[len(times) // 2], kernel_breakdown(graph.replay, torch.device("cuda"), rows=profile_rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--blocks", default=",".join(BLOCKS))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--jobs-per-call", default="1",
                   help="comma list: time each block with this many jobs' CFG pairs stacked in one call")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="also profile each variant's replayed graph and keep this many top kernels")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip what would start after this")
    args = p.parse_args(argv)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/svdr-configs-inductor")

    from gpu_throughput import fast_unet_on_gpu

    from renderer import performance

    t_start = time.perf_counter()
    pipe, applied, (sample, t, emb, time_ids) = fast_unet_on_gpu(cuda_graphs=False, compile=False, compile_vae=False,
                                                                 compile_cache_dir=None)
    unet = pipe.unet
    name, _ = performance.describe_device()
    blocks = {k: BLOCKS[k] for k in args.blocks.split(",")}
    with torch.inference_mode():
        inputs = capture_inputs(unet, blocks, lambda: unet(sample, t, encoder_hidden_states=emb,
                                                           added_time_ids=time_ids, return_dict=False))
    results: dict = {"device": name, "torch": torch.__version__, "applied": applied["applied"], "blocks": {}}

    def save():
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    for block, path in blocks.items():
        module = unet.get_submodule(path)
        row = results["blocks"][block] = {"path": path}
        for jobs in map(int, args.jobs_per_call.split(",")):
            a, kw = repeat_jobs(*inputs[block], jobs)
            key = "" if jobs == 1 else f"@{jobs}jobs"  # per call; ms_per_job divides by the jobs
            with torch.inference_mode():
                reference = first_tensor(module(*a, **kw)).float()
                row["eager_ms" + key] = round(time_graph(lambda: module(*a, **kw), args.iters), 3)
            for variant in args.variants.split(","):
                if time.perf_counter() - t_start > args.budget_s:
                    row[variant + key] = "skipped: out of time"
                    continue
                torch._dynamo.reset()
                compiled = torch.compile(module, fullgraph=True, dynamic=False, options=VARIANTS[variant])
                choices = (persistent_reductions(PERSISTENT[variant]) if variant in PERSISTENT
                           else contextlib.nullcontext())
                try:
                    with torch.inference_mode(), choices:
                        t0 = time.perf_counter()
                        out = first_tensor(compiled(*a, **kw))
                        torch.cuda.synchronize()
                        compile_s = time.perf_counter() - t0
                        diff = (out.float() - reference).abs().max().item()
                        timed = time_graph(lambda: compiled(*a, **kw), args.iters, args.profile)
                        ms, kernels = timed if args.profile else (timed, None)
                except Exception as exc:  # a failure is a result (torch 2.11's multi_kernel fails on a cache hit)
                    row[variant + key] = f"failed: {exc!r}"[:400]
                    print(block, variant + key, row[variant + key], flush=True)
                    save()
                    continue
                row[variant + key] = {"ms": round(ms, 3), "ms_per_job": round(ms / jobs, 3),
                                      "compile_s": round(compile_s, 1), "max_abs_vs_eager": diff}
                print(block, variant + key, row[variant + key], flush=True)
                if kernels is not None:
                    row[variant + key]["profile"] = kernels
                save()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
