"""What svdrender knows about models before loading them: the published SVD families (from their model cards) and
the built-in models' component configs, as data.

A model's own unet/config.json says how many frames it was trained for (diffusers renders that many when asked for
none); this table answers when the config cannot be read (a hub model not downloaded yet), and it holds what no
config says: the conditioning a model was fine-tuned with fixed. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelFamily:
    """A published SVD model: its hub repository, the frames it was trained for, and the settings it was
    fine-tuned with fixed (recipe setting → the recipe value that gives the model that conditioning)."""

    name: str
    repo_id: str
    num_frames: int
    fixed: tuple[tuple[str, Any], ...] = ()


FAMILIES = (
    # Model card: trained to generate 14 frames at 576×1024; its unet/config.json says num_frames 14.
    ModelFamily("SVD", "stabilityai/stable-video-diffusion-img2vid", 14),
    # Model card: 25 frames at 576×1024, fine-tuned from the 14-frame model; unet/config.json num_frames 25.
    ModelFamily("SVD-XT", "stabilityai/stable-video-diffusion-img2vid-xt", 25),
    # Model card: 25 frames, fine-tuned from SVD-XT with fixed conditioning at 6 FPS and motion bucket id 127
    # (other values still run, but were not trained for). The 6 is the value the model sees: Stability's sampler
    # (generative-models scripts/sampling/simple_video_sample.py) passes fps_id=6 to it unchanged, while diffusers'
    # pipeline sends fps - 1 ("micro-conditioned on fps-1 during training"), so the recipe's fps for it is 7.
    ModelFamily("SVD-XT 1.1", "stabilityai/stable-video-diffusion-img2vid-xt-1-1", 25,
                (("fps", 7), ("motion_bucket_id", 127))),
)


def family_of(model_id: str) -> ModelFamily | None:
    """The known family of a hub id (the hub matches repository names case-insensitively), or None."""
    folded = model_id.casefold()
    return next((f for f in FAMILIES if f.repo_id.casefold() == folded), None)


@dataclass(frozen=True, eq=False)
class BuiltinConfig:
    """A built-in pipeline: the real diffusers SVD classes built from these configs, with seeded random weights."""

    unet: Mapping[str, Any]  # UNetSpatioTemporalConditionModel(**unet): what its unet/config.json would say
    vae: Mapping[str, Any]  # AutoencoderKLTemporalDecoder(**vae)
    clip: Mapping[str, Any]  # CLIPVisionConfig(**clip)


BUILTIN_TINY = "builtin:tiny"
BUILTIN_TINY_14 = "builtin:tiny-14"  # the tiny architecture declaring 14 frames, as SVD's config does
BUILTIN_SVD_XT_RANDOM = "builtin:svd-xt-random"  # full-size architecture, random weights: GPU benchmarks

# The tiny architecture: real SVD block types at toy widths; cross-attention only on the lower-resolution level so a
# CPU job takes about a second.
_TINY_UNET = dict(
    sample_size=16, in_channels=8, out_channels=4,
    down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
    up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=(2, 4),
    transformer_layers_per_block=1, projection_class_embeddings_input_dim=3 * 32, addition_time_embed_dim=32,
    num_frames=8,
)
_TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                 block_out_channels=(32, 32, 32), latent_channels=4, layers_per_block=1, sample_size=32)
# The pipeline resizes the conditioning image to 224×224 itself, so even the tiny encoder must accept 224.
_TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, patch_size=28,
                  image_size=224, projection_dim=32)

# SVD-XT's own architecture (../shared/SVD_FACTS.md): the UNet's defaults are SVD's.
_XT_UNET = dict(num_frames=25)
_XT_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
               latent_channels=4, layers_per_block=2, sample_size=768, scaling_factor=0.18215)
_XT_CLIP = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
                image_size=224, projection_dim=1024, hidden_act="gelu")

BUILTIN_CONFIGS = {
    BUILTIN_TINY: BuiltinConfig(_TINY_UNET, _TINY_VAE, _TINY_CLIP),
    # num_frames is configuration only (no layer depends on it): the same weights as builtin:tiny.
    BUILTIN_TINY_14: BuiltinConfig({**_TINY_UNET, "num_frames": 14}, _TINY_VAE, _TINY_CLIP),
    BUILTIN_SVD_XT_RANDOM: BuiltinConfig(_XT_UNET, _XT_VAE, _XT_CLIP),
}
