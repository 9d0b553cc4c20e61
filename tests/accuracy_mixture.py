"""A latent distribution whose exact SVD denoiser is known, for measuring sampler error without real weights.

Every latent element is drawn independently from one 1-D Gaussian mixture, so the ideal denoiser D(x; σ) (the posterior
mean) is closed-form and the ideal sampler output distribution is known exactly. The tiny pipeline's UNet forward is
replaced by that denoiser, dressed up as SVD's UNet (v-prediction, EDM preconditioning with σ_data = 1, conditioned on
t = 0.25·ln σ), so the real `StableVideoDiffusionPipeline` loop and the real scheduler produce the samples; any
difference from the mixture is the sampler's own error (schedule, discretisation, wrong conditioning).

The initial noise is a shuffled grid of standard-normal quantiles instead of random draws: the probability-flow ODE of a
1-D distribution is monotone, so an exact ODE solver maps that grid onto the mixture's quantile grid, and the
Wasserstein-1 distance measured below is then pure sampler error with no Monte-Carlo floor (SDE samplers keep a small
floor from the noise they inject).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

# SVD's training range of σ; the real UNet's embedding saturates outside it, so the stand-in clamps (an integer
# timestep such as 999 from a DDPM-style scheduler then reads as "pure noise" rather than overflowing to inf).
SIGMA_MIN = 0.002
SIGMA_MAX = 700.0


@dataclass(frozen=True)
class Mixture:
    """A 1-D Gaussian mixture: weights, means and standard deviations of its components."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def _params(self, like: torch.Tensor):
        def as_tensor(values):
            return torch.tensor(values, dtype=like.dtype, device=like.device)

        return as_tensor(self.weights), as_tensor(self.means), as_tensor(self.stds)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Posterior mean E[x0 | x0 + σ·n = x] of the mixture, element-wise, in x's dtype."""
        w, mu, s = self._params(x)
        x = x.unsqueeze(-1)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        var = s**2 + sigma**2
        log_r = torch.log(w) - 0.5 * torch.log(var) - 0.5 * (x - mu) ** 2 / var
        r = torch.softmax(log_r, dim=-1)
        return (r * (mu + s**2 / var * (x - mu))).sum(-1)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        w, mu, s = self._params(x)
        z = (x.unsqueeze(-1) - mu) / s
        return (w * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)

    def quantiles(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse CDF at u by bisection (the mixture CDF has no closed-form inverse)."""
        lo = torch.full_like(u, min(self.means) - 12 * max(self.stds), dtype=torch.float64)
        hi = torch.full_like(u, max(self.means) + 12 * max(self.stds), dtype=torch.float64)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < u
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (lo + hi) / 2

    def moments(self) -> tuple[float, float]:
        mean = sum(w * m for w, m in zip(self.weights, self.means))
        second = sum(w * (s**2 + m**2) for w, m, s in zip(self.weights, self.means, self.stds))
        return mean, math.sqrt(second - mean**2)


# Two modes 2 apart with unequal masses and widths, mean 0 and std ≈ 1 like SVD's scaled latents (σ_data = 1). Far
# enough from a Gaussian that a sampler with the wrong conditioning (which ends up near N(0, 1)) is off by W1 ≈ 0.4,
# and narrow enough (std 0.1) that the low-σ end of the schedule matters.
MIXTURE = Mixture(weights=(0.35, 0.65), means=(-1.3, 0.7), stds=(0.1, 0.2))

# A second target for the benchmark, to show the ranking of presets is not an artefact of one distribution: three
# modes, one of them very narrow (std 0.05).
SECOND_MIXTURE = Mixture(weights=(0.3, 0.45, 0.25), means=(-1.3, 0.15, 1.25), stds=(0.25, 0.4, 0.05))


def install_exact_denoiser(pipe, mixture: Mixture = MIXTURE) -> None:
    """Replace this pipeline's UNet forward with the exact denoiser of `mixture`, conditioned the way SVD's UNet is."""
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

    unet = pipe.unet
    out_channels = unet.config.out_channels

    def forward(sample, timestep, encoder_hidden_states=None, added_time_ids=None, return_dict=True):
        # float32 throughout: the error it adds (~1e-7) is far below what the tests resolve, and it halves the run time.
        t = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device)
        sigma = torch.exp(4 * t).clamp(SIGMA_MIN, SIGMA_MAX)  # SVD conditions on t = c_noise = 0.25·ln σ
        if sigma.ndim:  # a per-batch timestep; broadcast over [batch, frames, channels, h, w]
            sigma = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
        # The pipeline feeds c_in·x (c_in = 1/√(σ²+1)) concatenated with the image latents on the channel axis.
        x = sample[:, :, :out_channels] * torch.sqrt(sigma**2 + 1)
        denoised = mixture.denoise(x, sigma)
        c_skip = 1 / (sigma**2 + 1)
        c_out = -sigma / torch.sqrt(sigma**2 + 1)
        v = ((denoised - c_skip * x) / c_out).to(sample.dtype)
        return UNetSpatioTemporalConditionOutput(sample=v) if return_dict else (v,)

    unet.forward = forward


def quantile_grid_noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Unit-variance 'noise' that is exactly the standard-normal quantile grid, shuffled into `shape`."""
    n = math.prod(shape)
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = math.sqrt(2) * torch.erfinv(2 * u - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return z[perm].to(torch.float32).reshape(shape)


def wasserstein1(samples: torch.Tensor, mixture: Mixture = MIXTURE) -> float:
    """W1 distance between the samples' empirical distribution and the mixture (inf if any sample is not finite)."""
    x = samples.flatten().to(torch.float64)
    if not torch.isfinite(x).all():
        return math.inf
    return (torch.sort(x).values - _quantile_grid(mixture, x.numel())).abs().mean().item()


@functools.lru_cache(maxsize=4)
def _quantile_grid(mixture: Mixture, n: int) -> torch.Tensor:
    # The mixture's quantiles at the same grid (i + 0.5)/n as the noise: what an exact sampler returns, sorted.
    return mixture.quantiles((torch.arange(n, dtype=torch.float64) + 0.5) / n)


class SamplerBench:
    """The tiny SVD pipeline with the exact denoiser of `mixture`: measures how far a scheduler's samples land."""

    def __init__(self, mixture: Mixture = MIXTURE, size: int = 128):
        import PIL.Image

        from renderer.builtin_models import build_tiny_pipeline

        self.mixture = mixture
        self.pipe = build_tiny_pipeline()
        install_exact_denoiser(self.pipe, mixture)
        self.size = size
        # The conditioning image only feeds the (replaced) UNet's extra channels; any image will do.
        self.image = PIL.Image.new("RGB", (size, size), (120, 80, 40))
        scale = self.pipe.vae_scale_factor
        frames = self.pipe.unet.config.num_frames
        channels = self.pipe.unet.config.out_channels
        self.noise = quantile_grid_noise((1, frames, channels, size // scale, size // scale))

    def latents(self, scheduler, call_kwargs: dict, seed: int = 0) -> torch.Tensor:
        """Run the real pipeline (no CFG) with `scheduler` and return the final latents."""
        from renderer.scheduler_presets import seed_scheduler

        generator = torch.Generator().manual_seed(seed)
        seed_scheduler(scheduler, generator)  # SDE samplers then draw from `seed`, not the global RNG
        self.pipe.scheduler = scheduler
        return self.pipe(self.image, height=self.size, width=self.size, max_guidance_scale=1.0, output_type="latent",
                         latents=self.noise, generator=generator, **call_kwargs).frames

    def error(self, scheduler, call_kwargs: dict, seed: int = 0) -> float:
        """W1 distance between the sampled latents and the target mixture."""
        return wasserstein1(self.latents(scheduler, call_kwargs, seed), self.mixture)


# --- d-dimensional mixtures with full covariances, sampled through the scheduler loop in float64 ---------------------
#
# A 1-D test alone misleads below about 10 UNet calls: its errors partly cancel, and among good samplers it ranks them
# differently from a multi-dimensional one. Here each sample is a d-vector from a Gaussian mixture with full, unequal
# covariances; the exact denoiser is still closed-form, and the error is the sliced Wasserstein distance: the mean over
# fixed directions θ of the W1 distance between the projected samples and the projected mixture, which is again a 1-D
# mixture (means θ·μ_k, variances θᵀΣ_kθ) whose quantiles are exact. The initial noise is scrambled Sobol points mapped
# to normals, so the Monte-Carlo floor stays well below the errors compared; seeds change the scrambling.


@dataclass(frozen=True)
class MixtureND:
    """A d-dimensional Gaussian mixture: weights, means (K × d) and covariances (K × d × d)."""

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    covariances: tuple[tuple[tuple[float, ...], ...], ...]

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def _params(self):
        f64 = torch.float64
        return (torch.tensor(self.weights, dtype=f64), torch.tensor(self.means, dtype=f64),
                torch.tensor(self.covariances, dtype=f64))

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Posterior mean E[x0 | x0 + σ·n = x] for samples x of shape (N, d), in float64."""
        w, mu, cov = self._params()
        noisy = cov + sigma**2 * torch.eye(self.dim, dtype=torch.float64)  # K × d × d
        chol = torch.linalg.cholesky(noisy)
        diff = x.unsqueeze(0) - mu.unsqueeze(1)  # K × N × d
        solved = torch.cholesky_solve(diff.transpose(1, 2), chol)  # K × d × N: C_k⁻¹ (x − μ_k)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)  # K
        log_r = torch.log(w)[:, None] - 0.5 * log_det[:, None] - 0.5 * (diff.transpose(1, 2) * solved).sum(1)
        r = torch.softmax(log_r, dim=0)  # K × N
        means = mu.unsqueeze(1) + (cov @ solved).transpose(1, 2)  # K × N × d: μ_k + Σ_k C_k⁻¹ (x − μ_k)
        return (r.unsqueeze(-1) * means).sum(0)

    def projected(self, direction: torch.Tensor) -> Mixture:
        """The 1-D mixture of θ·x for x from this mixture."""
        w, mu, cov = self._params()
        return Mixture(weights=self.weights, means=tuple((mu @ direction).tolist()),
                       stds=tuple(torch.sqrt(direction @ cov @ direction).tolist()))


def _covariance(stds: tuple[float, ...], correlations: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    # Correlations in the upper triangle, row by row; the result must be positive definite (checked by the denoiser).
    d = len(stds)
    corr = torch.eye(d, dtype=torch.float64)
    upper = iter(correlations)
    for i in range(d):
        for j in range(i + 1, d):
            corr[i, j] = corr[j, i] = next(upper)
    cov = torch.tensor(stds, dtype=torch.float64)[:, None] * corr * torch.tensor(stds, dtype=torch.float64)[None, :]
    return tuple(tuple(row) for row in cov.tolist())


# Two dimensions, three modes: an elongated tilted one, a round one and a narrow one (std 0.1 along its thin axis, as narrow as the 1-D target's);
# overall std ≈ 1 per coordinate like SVD's latents.
MIXTURE_2D = MixtureND(
    weights=(0.45, 0.35, 0.2),
    means=((-0.9, -0.5), (0.9, -0.2), (0.2, 1.4)),
    covariances=(_covariance((0.5, 0.2), (0.7,)), _covariance((0.25, 0.3), (-0.2,)), _covariance((0.3, 0.1), (0.4,))),
)

# Four dimensions, four modes with full, unequal covariances.
MIXTURE_4D = MixtureND(
    weights=(0.3, 0.3, 0.25, 0.15),
    means=((-1.0, 0.4, -0.6, 0.8), (0.8, -0.9, 0.3, 0.2), (0.3, 1.0, 0.9, -1.0), (0.6, 0.2, -1.3, -0.6)),
    covariances=(_covariance((0.4, 0.3, 0.2, 0.35), (0.5, -0.3, 0.2, 0.1, 0.4, -0.2)),
                 _covariance((0.2, 0.45, 0.3, 0.15), (-0.4, 0.3, 0.1, -0.2, 0.5, 0.3)),
                 _covariance((0.3, 0.2, 0.1, 0.3), (0.6, 0.2, -0.1, 0.3, -0.3, 0.2)),
                 _covariance((0.1, 0.25, 0.3, 0.2), (0.1, 0.3, -0.4, 0.2, 0.1, 0.5))),
)

MIXTURE_1D = MixtureND(weights=MIXTURE.weights, means=tuple((m,) for m in MIXTURE.means),
                       covariances=tuple(((s**2,),) for s in MIXTURE.stds))

MIXTURES = {"1-D": MIXTURE_1D, "2-D": MIXTURE_2D, "4-D": MIXTURE_4D}

SAMPLES = 1 << 14
DIRECTIONS = 32


def sobol_noise(dim: int, n: int = SAMPLES, seed: int = 0) -> torch.Tensor:
    """n standard-normal d-vectors from scrambled Sobol points (low discrepancy: a small Monte-Carlo floor)."""
    u = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    u = u.clamp(0.5 / n, 1 - 0.5 / n)
    return math.sqrt(2) * torch.erfinv(2 * u - 1)


@functools.lru_cache(maxsize=8)
def _directions(dim: int) -> torch.Tensor:
    if dim == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    g = torch.randn(DIRECTIONS, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


@functools.lru_cache(maxsize=8)
def _projected_quantiles(mixture: MixtureND, n: int) -> torch.Tensor:
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.stack([mixture.projected(theta).quantiles(u) for theta in _directions(mixture.dim)])


def sliced_wasserstein(samples: torch.Tensor, mixture: MixtureND) -> float:
    """Mean over fixed directions of the W1 distance between projected samples (N × d) and the projected mixture."""
    if not torch.isfinite(samples).all():
        return math.inf
    projected = torch.sort(samples.to(torch.float64) @ _directions(mixture.dim).T, dim=0).values.T
    return (projected - _projected_quantiles(mixture, samples.shape[0])).abs().mean().item()


def sample_nd(scheduler, call_kwargs: dict, mixture: MixtureND, noise: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The scheduler's samples of `mixture` from `noise` (N × d), run the way SVD's pipeline runs it, in float64.

    Same calls in the same order as StableVideoDiffusionPipeline's loop (set_timesteps through diffusers'
    retrieve_timesteps, init_noise_sigma, scale_model_input, step), with the exact denoiser dressed as SVD's UNet:
    σ read back from t = 0.25·ln σ, input scaled by c_in, v-prediction out. No pipeline around it: float64 throughout
    and no image encoding, so one run takes milliseconds.
    """
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import retrieve_timesteps

    from renderer.scheduler_presets import seed_scheduler

    generator = torch.Generator().manual_seed(seed)
    seed_scheduler(scheduler, generator)
    timesteps, _ = retrieve_timesteps(scheduler, call_kwargs.get("num_inference_steps"), "cpu", None,
                                      call_kwargs.get("sigmas"))
    x = noise.to(torch.float64) * scheduler.init_noise_sigma
    for t in timesteps:
        scaled = scheduler.scale_model_input(x, t)
        sigma = min(max(math.exp(4 * float(t)), SIGMA_MIN), SIGMA_MAX)
        inner = scaled * math.sqrt(sigma**2 + 1)
        denoised = mixture.denoise(inner, sigma)
        v = (denoised - inner / (sigma**2 + 1)) / (-sigma / math.sqrt(sigma**2 + 1))
        x = scheduler.step(v, t, x).prev_sample
    return x


def nd_error(scheduler_and_kwargs, mixture: MixtureND, seeds=(0, 1, 2)) -> float:
    """Median over seeds of the sliced Wasserstein error; `scheduler_and_kwargs()` builds a fresh scheduler."""
    errors = []
    for seed in seeds:
        scheduler, kwargs = scheduler_and_kwargs()
        errors.append(sliced_wasserstein(sample_nd(scheduler, kwargs, mixture, sobol_noise(mixture.dim, seed=seed),
                                                   seed), mixture))
    return sorted(errors)[len(errors) // 2]


def preset_nd_error(preset, mixture: MixtureND, seeds=(0, 1, 2)) -> float:
    """`nd_error` of a built-in preset (a name or a recipe mapping), built for SVD's scheduler config."""
    from renderer.scheduler_presets import build
    from renderer.builtin_models import SVD_SCHEDULER_CONFIG

    return nd_error(lambda: build(preset, SVD_SCHEDULER_CONFIG), mixture, seeds)


REFERENCE = {"scheduler": "euler", "num_inference_steps": 25}  # SVD's own sampler at its default 25 calls
