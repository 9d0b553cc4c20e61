"""The only module that runs torch and diffusers: load a pipeline once, then render jobs on it.

A job's frames depend only on the job: the scheduler is rebuilt from the model's own scheduler config for every job,
and every random draw (initial latents, conditioning noise, stochastic sampler steps) comes from a CPU
`torch.Generator` seeded with the job's seed, so the frames are the same alone, in a batch, in any order, and the
initial noise is the same on any device.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import hub, images, scheduler_presets
from .errors import JobError, ModelUnavailableError
from .paths import local_model_path
from .plan import Job, model_revision
from .speed import rewrites, runtime
from .speed.profiles import JobWork, PerformanceRecord, PerformanceRequest, Shape, choose_auto
from .speed.settings import PerformanceSettings, effective_decode_chunk_size, resolve_settings
from .recipe import BUILTIN_MODELS, BUILTIN_SVD_XT_RANDOM, ModelSpec, is_hub_id
from .records import ModelRecord, SchedulerUsed, SegmentRecord

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class Rendered:
    """One job's frames and how they were made."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    scheduler: SchedulerUsed
    timings: dict = field(default_factory=dict)  # every segment's together
    fallback: list[str] = field(default_factory=list)  # what out-of-memory retries changed, e.g. decode_chunk_size=2
    segments: tuple[SegmentRecord, ...] = ()


def quiet_library_logs() -> None:
    """Silence diffusers'/transformers' advice meant for library authors (dtype casting, torchvision fallbacks), which
    they log on every load; svdrender reports what it used in the manifest instead. SVDRENDER_DEBUG=1 keeps the logs.
    Called when svdrender loads a pipeline, not at import: importing the engine changes nothing for the host
    program."""
    if os.environ.get("SVDRENDER_DEBUG"):
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def resolve_device(requested: str | None) -> str:
    """`auto`/None → cuda when available, else mps, else cpu."""
    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelUnavailableError(f"--device {requested}: no CUDA GPU is visible to torch "
                                        f"{torch.__version__}; use --device cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """auto → float16 on GPUs, float32 on CPU; half precision on a CPU is computed in float32 (far faster there)."""
    if torch.device(device).type == "cpu":
        return torch.bfloat16 if requested == "bfloat16" else torch.float32
    if requested == "auto":
        return torch.float16
    return _DTYPES[requested]


def load_pipeline(model: ModelSpec, device: str, base_dir: Path, dtype: str | None = None):
    """Load the pipeline a ModelSpec names (in `dtype` when given); raise ModelUnavailableError with one sentence."""
    start = time.perf_counter()
    dtype = resolve_dtype(dtype or model.dtype, device)
    if model.is_builtin:
        from . import builtin_models

        if model.id == BUILTIN_SVD_XT_RANDOM:
            pipe = builtin_models.build_svd_xt_random(device, dtype)
        elif model.id in BUILTIN_MODELS:
            pipe = builtin_models.build_tiny_pipeline(model.id)
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
        else:
            raise ModelUnavailableError(f"unknown built-in model '{model.id}'; built-in models are "
                                        f"{', '.join(BUILTIN_MODELS)}")
        source, resolved = model.id, "builtin"
    else:
        from diffusers import StableVideoDiffusionPipeline

        local = local_model_path(model.id, base_dir)
        if local.is_dir():
            source, resolved = str(local), "local"
        elif is_hub_id(model.id):
            source, resolved = model.id, model.revision
        else:
            raise ModelUnavailableError(f"model '{model.id}' is neither a local folder (looked in {local}) nor a "
                                        "Hugging Face hub id like org/name")
        kwargs: dict[str, Any] = {"dtype": dtype}
        if model.variant:
            kwargs["variant"] = model.variant
        if resolved != "local":
            kwargs["revision"] = model.revision
        try:
            pipe = StableVideoDiffusionPipeline.from_pretrained(source, **kwargs)
        except Exception as exc:  # hub/IO errors come in many classes; the user needs one sentence
            raise ModelUnavailableError(_unavailable_message(model, source, resolved, exc)) from None
        if resolved != "local":
            resolved = model_revision(model, base_dir) or model.revision  # the commit, now that it is cached
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    info = ModelRecord(id=model.id, source=source, requested_revision=model.revision, resolved_revision=resolved,
                       variant=model.variant, dtype=str(dtype).removeprefix("torch."), device=device,
                       load_seconds=round(time.perf_counter() - start, 3))
    return pipe, info


def _unavailable_message(model: ModelSpec, source: str, kind: str, exc: Exception) -> str:
    if kind == "local":
        return f"model folder {source} cannot be loaded as a StableVideoDiffusionPipeline: {_first_line(exc)}"
    failure = hub.classify(exc, model.id, model.revision)
    if failure is not None:
        return failure.message
    # Not a hub error (a broken cached file, an incompatible config): the innermost error says what is wrong, where
    # the wrappers around it give advice for library authors.
    variant = f" (variant {model.variant})" if model.variant else ""
    innermost = hub.chain(exc)[-1]
    return f"model '{model.id}' revision '{model.revision}'{variant} could not be loaded: {_first_line(innermost)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PreparedClipInput:
    """The pipeline's own _encode_image, handed a CLIP input prepared ahead of time.

    SVD conditions on a CLIP embedding of the input image, and diffusers first resizes the image to 224×224 with
    an antialiasing blur on the CPU while the GPU waits (part of the 0.1 s a job that CLIP encoding measured on an
    H200 machine; benchmarks/README.md). The engine runs those same diffusers lines for the next job on its
    prefetch thread, while the current job renders; given the result, a tensor, _encode_image skips its own resize
    and goes on unchanged, so the embedding is the same bit for bit.

    The pipeline call then gets the image as the tensor diffusers' preprocessing makes of it (`pixels`), which it
    takes as it is: diffusers' conversion and preprocessing of the image (0.06-0.09 s of CPU on a 2-core machine at
    1024×576) move to the prefetch thread too. Only the image this object expects may go in as a tensor: for any
    other, _encode_image would skip the resize.
    """

    def __init__(self, pipe):
        self._encode_image = pipe._encode_image
        self._processor = pipe.video_processor
        self._expected = None
        self.used = 0
        pipe._encode_image = self

    def pixels(self, image) -> torch.Tensor:
        """A PIL image as diffusers converts it, [1, 3, H, W] in [0, 1]: what both _encode_image and the VAE's
        preprocessing (which takes such a tensor unchanged, then maps it to [-1, 1]) start from."""
        return self._processor.numpy_to_pt(self._processor.pil_to_numpy(image))

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """What diffusers' _encode_image (0.40–0.42) computes from the image before the CLIP normalisation."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        return (_resize_with_antialiasing(pixels * 2.0 - 1.0, (224, 224)) + 1.0) / 2.0

    def expect(self, image, prepared: torch.Tensor) -> None:
        """The next call for `image` (the same object) uses `prepared`."""
        self._expected = (image, prepared)

    def __call__(self, image, *args, **kwargs):
        expected, self._expected = self._expected, None
        if expected is not None and expected[0] is image:
            image = expected[1]
            self.used += 1
        return self._encode_image(image, *args, **kwargs)


class Engine:
    """Loads one pipeline (on first use) and renders jobs on it."""

    def __init__(self, model: ModelSpec, *, device: str | None = None, base_dir: Path | None = None,
                 performance: PerformanceRequest | PerformanceSettings | None = None,
                 jobs: Sequence[Job] | None = None):
        self.model = model
        self.device = resolve_device(device)
        self.base_dir = Path.cwd() if base_dir is None else base_dir
        self.pipe = None
        self.info: ModelRecord | None = None
        self.loads = 0
        self._base_scheduler_config: dict | None = None
        self.memory_savers: list[str] = []  # forward_chunking, cpu_offload: once enabled, kept for later jobs
        self.performance_request = performance or PerformanceRequest()
        # What the batch will ask of the UNet, for `auto` to weigh compiling against (None: not known).
        self.work = None if jobs is None else [
            JobWork(Shape(j.settings.width, j.settings.height, j.settings.num_frames),
                    j.settings.num_inference_steps * j.settings.segments)
            for j in jobs]
        self._device_name = "cpu"
        self.speed: PerformanceSettings | None = None
        self.performance: PerformanceRecord | None = None  # what optimize_pipeline applied, for sidecars
        self._prefetched: dict[str, Future] = {}
        self._loader: ThreadPoolExecutor | None = None
        self.clip_input: PreparedClipInput | None = None

    def load(self) -> ModelRecord:
        """Load the pipeline if it is not loaded yet (one load per Engine), with the performance profile applied."""
        if self.pipe is None:
            request = self.performance_request
            profile = request.profile
            on_cuda = torch.device(self.device).type == "cuda"
            name, vram = runtime.describe_device() if on_cuda else ("cpu", 0.0)
            self._device_name = name
            choice = None
            if isinstance(request, PerformanceSettings):  # benchmarks: every knob, set by hand
                self.speed = request
            else:
                if profile == "auto" and on_cuda:
                    choice = choose_auto(vram, self.work, warm=lambda shape: runtime.is_warm(shape, name))
                    profile = choice.profile
                self.speed = resolve_settings(profile, name, vram, **request.overrides())
            # The profile's dtype applies when the recipe leaves it to svdrender (dtype: auto).
            dtype = self.speed.dtype if on_cuda and self.model.dtype == "auto" else None
            quiet_library_logs()
            self.pipe, self.info = load_pipeline(self.model, self.device, self.base_dir, dtype=dtype)
            self._base_scheduler_config = dict(self.pipe.scheduler.config)
            self.performance = runtime.optimize_pipeline(self.pipe, self.speed)
            if choice is not None:
                self.performance = replace(self.performance, auto=choice)
            self.clip_input = PreparedClipInput(self.pipe)
            self.loads += 1
        return self.info

    def prefetch(self, job: Job) -> None:
        """Start the CPU work of `job`'s first moments on a background thread, for render() to pick up: decoding
        and fitting its input image, converting it to diffusers' tensor, preparing its CLIP input, and drawing its
        initial latents.

        The batch calls this for the next job while the current one renders, so the GPU does not wait for it.
        """
        if job.id not in self._prefetched:
            if self._loader is None:
                self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svdrender-prefetch")
            self._prefetched[job.id] = self._loader.submit(self._prepared_input, job)

    def _prepared_input(self, job: Job):
        image = self._fitted_image(job)
        if self.clip_input is None:  # not loaded yet
            return image, None, None
        pixels = self.clip_input.pixels(image)
        return pixels, self.clip_input.prepare(pixels), self._initial_draws(job)

    def _initial_draws(self, job: Job) -> tuple[torch.Tensor, torch.Generator]:
        """The job's initial latents, drawn as the pipeline draws them, and a generator where its would be after.

        The pipeline draws two tensors from the job's CPU generator before the first step: the conditioning noise
        (image-sized, float32) and then the initial latents (CPU time while the GPU waits).
        Here a second generator with the job's seed draws both, on the prefetch thread; the pipeline gets the
        latents (`latents=`) and still draws the noise itself, and the scheduler's steps continue from the second
        generator, which is where the pipeline's own would be. Every draw is the same as without this.
        """
        pipe = self.pipe
        s = job.settings
        generator = torch.Generator(device="cpu").manual_seed(job.seed)
        torch.randn((1, 3, s.height, s.width), generator=generator, dtype=torch.float32)  # the conditioning noise
        scale = pipe.vae_scale_factor
        shape = (1, s.num_frames, pipe.unet.config.in_channels // 2, s.height // scale, s.width // scale)
        latents = torch.randn(shape, generator=generator, dtype=next(pipe.image_encoder.parameters()).dtype)
        return latents, generator

    @staticmethod
    def _fitted_image(job: Job):
        s = job.settings
        return images.fit_image(images.load_image(job.image), s.width, s.height, s.fit)

    def render(self, job: Job, on_step: Callable[[int, int], None] | None = None) -> Rendered:
        """Render one job to uint8 frames: one pipeline call per segment, each segment after the first conditioned
        on the last frame of the one before. `on_step(done, total)` counts the steps of every segment."""
        self.load()
        s = job.settings
        seeds = job.segment_seeds
        prefetched = self._prefetched.pop(job.id, None)
        chunk = first_chunk = effective_decode_chunk_size(self.speed, s.decode_chunk_size) or s.num_frames
        frames = None
        made = 0  # frames of the video so far
        records: list[SegmentRecord] = []
        timings: dict[str, float] = {}
        for index, seed in enumerate(seeds):
            t0 = time.perf_counter()
            if index == 0:
                # A prefetched job's errors are raised here, for its own job.
                image, clip_input, draws = (prefetched.result() if prefetched is not None
                                            else (self._fitted_image(job), None, None))
                conditioning_frame, conditioning_sha256 = None, job.image_sha256
            else:
                # The decoded uint8 frame, exactly as the video holds it, goes in as an input image does.
                image, clip_input, draws = Image.fromarray(frames[made - 1]), None, None
                conditioning_frame = made - 1
                conditioning_sha256 = hashlib.sha256(frames[made - 1].tobytes()).hexdigest()

            def segment_step(done: int, total: int, index: int = index) -> None:
                if on_step is not None:
                    on_step(index * total + done, len(seeds) * total)

            clip, scheduler, call_kwargs, chunk, spent = self._render_segment(
                job, seed, image, clip_input, draws, chunk, segment_step, t0)
            if len(seeds) == 1:
                frames = clip
            else:
                if frames is None:
                    frames = np.empty((job.frame_count, *clip.shape[1:]), np.uint8)
                if index > 0:
                    # SVD is trained to reproduce its conditioning image as its first frame: an approximate copy of
                    # the frame the video already holds at made - 1.
                    clip = clip[1:]
                frames[made:made + len(clip)] = clip
            records.append(SegmentRecord(index=index, seed=seed, conditioning_frame=conditioning_frame,
                                         conditioning_sha256=conditioning_sha256, first_frame=made,
                                         last_frame=made + len(clip) - 1,
                                         timings={k: round(v, 3) for k, v in spent.items()}))
            made += len(clip)
            for name, seconds in spent.items():
                timings[name] = timings.get(name, 0.0) + seconds
        return Rendered(
            frames=np.ascontiguousarray(frames),
            scheduler=SchedulerUsed(
                class_name=type(scheduler).__name__,
                config={k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
                sigmas=tuple(round(float(x), 6) for x in getattr(scheduler, "sigmas", [])),
                call_kwargs={k: (list(map(float, v)) if k == "sigmas" else v) for k, v in call_kwargs.items()}),
            timings={k: round(v, 3) for k, v in timings.items()},
            fallback=self._fallback(first_chunk, chunk),
            segments=tuple(records),
        )

    def _render_segment(self, job: Job, seed: int, image, clip_input, draws, chunk: int,
                        on_step: Callable[[int, int], None], t0: float):
        """One pipeline call on `image` with `seed`: its uint8 frames, the scheduler and call arguments it ran with,
        the decode chunk it ended with (smaller after running out of memory while decoding), and its timings."""
        s = job.settings
        timings: dict[str, float] = {}
        scheduler, call_kwargs, generator = self._sampler(job, seed)
        initial_latents = None
        if draws is not None:
            initial_latents, after_draws = draws
            scheduler_presets.seed_scheduler(scheduler, after_draws)
        timings["prepare"] = time.perf_counter() - t0

        def step_end(pipe, i, t, kwargs):
            on_step(i + 1, len(pipe.scheduler.timesteps))
            return kwargs

        first_chunk = chunk
        latents = None
        while True:
            try:
                with torch.inference_mode(), runtime.call_context(self.speed):
                    if latents is None:
                        t1 = time.perf_counter()
                        if clip_input is not None:
                            self.clip_input.expect(image, clip_input)
                        latents = self.pipe(
                            image,
                            height=s.height,
                            width=s.width,
                            num_frames=s.num_frames,
                            fps=s.fps,
                            motion_bucket_id=s.motion_bucket_id,
                            noise_aug_strength=s.noise_aug_strength,
                            min_guidance_scale=s.min_guidance_scale,
                            max_guidance_scale=s.max_guidance_scale,
                            decode_chunk_size=chunk,
                            generator=generator,
                            output_type="latent",
                            callback_on_step_end=step_end,
                            latents=initial_latents,
                            **call_kwargs,
                        ).frames
                        self._sync()
                        t2 = time.perf_counter()
                    # Decoding outside the pipeline call separates denoise and decode timings; it is the same code
                    # the pipeline runs for output_type="pt".
                    video = self.pipe.decode_latents(latents, s.num_frames, chunk)
                    video = self.pipe.video_processor.postprocess_video(video=video, output_type="pt")[0]
                    frames = runtime.frames_to_uint8(video)
                    self._sync()
                break
            except _OUT_OF_MEMORY as exc:
                failed_in = "denoise" if latents is None else "decode"
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            # Out of the except block, so the traceback no longer pins the failed attempt's tensors.
            self._release_memory()
            if failed_in == "decode" and chunk > 1:
                chunk = max(1, chunk // 2)  # the latents are kept: only the decode runs again
            elif not self._save_memory(failed_in):
                tried = ", ".join(self._fallback(first_chunk, chunk))
                raise JobError(f"out of memory while {'denoising' if failed_in == 'denoise' else 'decoding'}"
                               f"{' even with ' + tried if tried else ''}: {message}; lower width, height or "
                               "num_frames" + (", or render with --profile low (CPU offload)"
                                               if self.speed is not None and self.speed.compile else ""))
            elif failed_in == "denoise":
                scheduler, call_kwargs, generator = self._sampler(job, seed)  # the same noise as the first attempt
                initial_latents = None  # the prefetched generator is consumed: the pipeline draws the latents again
        timings["denoise"] = t2 - t1
        timings["decode"] = time.perf_counter() - t2
        if not np.isfinite(latents.float().cpu().numpy()).all():
            raise JobError("the sampler produced NaN or infinite latents (try dtype float32 or bfloat16)")
        runtime.mark_warm(self.speed, Shape(s.width, s.height, s.num_frames), self._device_name)
        return np.ascontiguousarray(frames), scheduler, call_kwargs, chunk, timings

    def _sampler(self, job: Job, seed: int):
        """A fresh scheduler on the pipeline, its call arguments, and a CPU generator seeded with `seed`."""
        scheduler, call_kwargs = scheduler_presets.build(job.scheduler, self._base_scheduler_config)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        scheduler_presets.seed_scheduler(scheduler, generator)
        self.pipe.scheduler = scheduler
        return scheduler, call_kwargs, generator

    def _save_memory(self, failed_in: str) -> bool:
        """Enable the next memory saver for the phase that ran out of memory; False when none is left.

        Forward chunking runs the UNet's feed-forward layers on slices of rows (denoise only); model CPU offload
        keeps only the running model on the GPU (needs a GPU to offload from). Both stay on for later jobs.
        """
        if failed_in == "denoise" and "forward_chunking" not in self.memory_savers:
            # svdrender's row chunking, not diffusers' enable_forward_chunking: with CPU offload (the next saver)
            # diffusers' frame-axis slices ran 6x slower per step (benchmarks/README.md).
            rewrites.chunk_feed_forwards(self.pipe.unet)
            self.memory_savers.append("forward_chunking")
            return True
        # Offloading hooks defeat a compiled UNet (the settings check refuses that pair): a compiled run that still
        # runs out of memory fails the job, and its message points to the `low` profile.
        compiled = self.speed is not None and self.speed.compile
        if "cpu_offload" not in self.memory_savers and torch.device(self.device).type == "cuda" and not compiled:
            self.pipe.enable_model_cpu_offload(device=self.device)
            self.memory_savers.append("cpu_offload")
            return True
        return False

    def _fallback(self, first_chunk: int, chunk: int) -> list[str]:
        """What this job ran with to fit in memory, for its sidecar."""
        smaller = [f"decode_chunk_size={chunk}"] if chunk != first_chunk else []
        return smaller + self.memory_savers

    def _release_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
