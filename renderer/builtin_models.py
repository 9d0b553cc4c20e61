"""Built-in pipelines made of the real diffusers SVD classes with seeded random weights; nothing to download.

- builtin:tiny — a few MB; tests, demos and CPU smoke runs exercise the real `StableVideoDiffusionPipeline` path.
- builtin:tiny-14 — the same weights, its UNet config declaring 14 frames (as SVD's does), for model defaults.
- builtin:svd-xt-random — the full-size SVD-XT architecture (2.25 B parameters) for GPU benchmarks: the same
  compute and memory as the real model, so speed and VRAM figures transfer; the videos are noise.
The configs are data in model_families, so that validate and plan read a built-in model's defaults without torch.
Only the engine (and benchmarks) import this module.
"""

from __future__ import annotations

import threading

from .model_families import BUILTIN_CONFIGS, BUILTIN_SVD_XT_RANDOM, BUILTIN_TINY

# Same scheduler config that stabilityai/stable-video-diffusion-img2vid(-xt) ship, so presets resolve identically.
SVD_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "timestep_type": "continuous",
    "sigma_min": 0.002,
    "sigma_max": 700.0,
    "use_karras_sigmas": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
}

TINY_SEED = 20240101
TINY_NUM_FRAMES = BUILTIN_CONFIGS[BUILTIN_TINY].unet["num_frames"]
TINY_VAE_SCALE = 4  # three VAE blocks → two downsamplings


_GLOBAL_RNG_LOCK = threading.Lock()


def _seed_weights(model, generator) -> None:
    """Draw every weight of `model` from `generator` alone, in registration order, so that the weights depend on the
    seed only, never on what other threads do with the global RNG.

    Weights and biases get PyTorch's default Linear/Conv init, U(±1/√fan_in); other parameters (embeddings, class
    tokens) get N(0, 0.02) as CLIP initialises them; normalisation layers keep their constant init (ones, zeros).
    """
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                continue
            weight = getattr(module, "weight", None)
            fan_in = weight[0].numel() if isinstance(weight, torch.Tensor) and weight.dim() >= 2 else None
            for name, param in module.named_parameters(recurse=False):
                if fan_in is not None and name in ("weight", "bias"):
                    bound = fan_in ** -0.5
                    param.uniform_(-bound, bound, generator=generator)
                else:
                    param.normal_(0.0, 0.02, generator=generator)


def _build(device: str, unet: dict, vae: dict, clip: dict):
    """A StableVideoDiffusionPipeline of the real classes with these shapes and seeded weights, built on `device`."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:  # transformers 5 splits the processor; the PIL one needs no torchvision
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    device = torch.device(device)
    # The constructors draw their default init from the global RNG, which other threads share; those draws are
    # thrown away (every weight is drawn again below from this build's own generator). fork_rng gives the caller's
    # RNG state back, and the lock keeps two builds from restoring each other's state.
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        unet_model = UNetSpatioTemporalConditionModel(**unet)
        vae_model = AutoencoderKLTemporalDecoder(**vae)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip))
    for offset, model in enumerate((unet_model, vae_model, image_encoder)):
        # transformers 5 builds its models on the CPU whatever the device context says; the generator below must be
        # on the same device as every parameter it fills.
        model.to(device)
        _seed_weights(model, torch.Generator(device=device).manual_seed(TINY_SEED + offset))
        model.eval()  # inference: a training-mode dropout would draw from the global RNG
    pipe = StableVideoDiffusionPipeline(
        vae=vae_model,
        image_encoder=image_encoder,
        unet=unet_model,
        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(model_id: str = BUILTIN_TINY):
    """Build a tiny SVD pipeline (builtin:tiny or a variant); the same weights on every machine (seeded CPU init)."""
    spec = BUILTIN_CONFIGS[model_id]
    return _build("cpu", spec.unet, spec.vae, spec.clip)


def build_svd_xt_random(device: str = "cuda", dtype=None):
    """The full-size SVD-XT pipeline with seeded random weights, initialised directly on `device` (fast on a GPU)."""
    spec = BUILTIN_CONFIGS[BUILTIN_SVD_XT_RANDOM]
    pipe = _build(device, spec.unet, spec.vae, spec.clip)
    if dtype is not None:
        pipe.to(dtype=dtype)
    return pipe
