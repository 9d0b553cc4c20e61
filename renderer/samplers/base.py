"""The part every svdrender sampler shares: a diffusers scheduler that follows any σ list the EDM way, for SVD.

SVD's UNet is conditioned on t = c_noise = 0.25·ln σ and predicts v under EDM preconditioning (Karras et al. 2022,
table 1). diffusers' multistep schedulers either make their own σ or hand SVD integer timesteps; a subclass here only
says how one step moves the sample from σ_i to σ_{i+1} given the denoised estimate, and inherits the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from renderer.scheduler_presets import karras_sigmas


@dataclass
class EDMSchedulerOutput(BaseOutput):
    """The sample at the next σ, and the denoiser's estimate of the clean sample at this one."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class EDMSigmaScheduler(SchedulerMixin, ConfigMixin):
    """Base of svdrender's samplers: any σ list, continuous timesteps 0.25·ln σ, one UNet call per step.

    Works with `StableVideoDiffusionPipeline`: `set_timesteps(sigmas=[...])` takes σ values (n + 1 of them, a final 0
    allowed), `timesteps` are SVD's c_noise = 0.25·ln σ. Subclasses implement `_update`.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        sigma_data: float = 1.0,
        prediction_type: str = "v_prediction",
        num_train_timesteps: int = 1000,
    ):
        if prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {prediction_type!r}")
        self.num_inference_steps = None
        self._set_sigmas(karras_sigmas(num_train_timesteps, sigma_min, sigma_max), device=None)

    @property
    def init_noise_sigma(self) -> float:
        # The marginal at the first σ is data (std σ_data) plus σ·noise; the pipeline scales unit noise by this.
        return math.sqrt(float(self.sigmas[0]) ** 2 + self.config.sigma_data**2)

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | torch.Tensor | None = None) -> None:
        """Follow `sigmas` (σ_max … final σ), or a Karras schedule of `num_inference_steps` steps."""
        if (num_inference_steps is None) == (sigmas is None):
            raise ValueError("pass exactly one of num_inference_steps or sigmas")
        if sigmas is None:
            sigmas = karras_sigmas(num_inference_steps, self.config.sigma_min, self.config.sigma_max)
        sigmas = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
        if len(sigmas) < 2:
            raise ValueError("sigmas needs at least 2 values")
        if any(s <= 0 for s in sigmas[:-1]) or sigmas[-1] < 0:
            raise ValueError("sigmas must be positive (only the last may be 0)")
        if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
            raise ValueError("sigmas must be strictly decreasing")
        self._set_sigmas(sigmas, device)
        self.num_inference_steps = len(sigmas) - 1

    def _set_sigmas(self, sigmas, device) -> None:
        # σ stay float64 on the CPU: the step coefficients are computed in float64 and only the samples live on device.
        self.sigmas = torch.tensor(sigmas, dtype=torch.float64)
        self.timesteps = (0.25 * torch.log(self.sigmas[:-1])).to(dtype=torch.float32, device=device)
        self._step_index = None
        self._begin_index = None
        self._reset_history()

    def _reset_history(self) -> None:
        """Forget what earlier steps remembered (a new σ list starts a new trajectory)."""

    def _init_step_index(self, timestep) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        timestep = torch.as_tensor(timestep, dtype=self.timesteps.dtype, device=self.timesteps.device)
        matches = (self.timesteps == timestep).nonzero()
        if len(matches) == 0:
            raise ValueError(f"timestep {float(timestep)} is not one of this scheduler's timesteps")
        self._step_index = int(matches[0])

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """EDM input scaling c_in = 1/√(σ² + σ_data²)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = float(self.sigmas[self._step_index])
        return sample / math.sqrt(sigma**2 + self.config.sigma_data**2)

    def _denoised(self, model_output: torch.Tensor, sample: torch.Tensor, sigma: float) -> torch.Tensor:
        # EDM preconditioning (Karras et al. 2022, table 1) for σ_data and the model's prediction type.
        sigma_data = self.config.sigma_data
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / math.sqrt(sigma**2 + sigma_data**2)
        if self.config.prediction_type == "v_prediction":
            c_out = -c_out
        return c_skip * sample + c_out * model_output

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             return_dict: bool = True) -> EDMSchedulerOutput | tuple:
        """One step from σ_i to σ_{i+1} with the subclass's method."""
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        # Upcast (never down): fp16 latents at σ ≈ 700 would lose the data-scale detail the update adds.
        work = torch.promote_types(sample.dtype, torch.float32)
        x = sample.to(work)
        denoised = self._denoised(model_output.to(work), x, float(self.sigmas[i]))
        prev = self._update(x, denoised, i)
        self._step_index += 1
        prev = prev.to(sample.dtype)
        if not return_dict:
            return (prev, denoised)
        return EDMSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def _update(self, x: torch.Tensor, denoised: torch.Tensor, i: int) -> torch.Tensor:
        """The sample at σ_{i+1} from the sample x at σ_i and its denoised estimate."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.config.num_train_timesteps
