"""svdrender's own diffusers scheduler: DPM-Solver++(2M) on any σ list, for EDM models such as SVD.

diffusers' EDMDPMSolverMultistepScheduler only makes its own Karras/exponential schedule, and its
DPMSolverMultistepScheduler hands SVD integer timesteps; neither runs DPM++ 2M on the Align Your Steps σ, which is the
most accurate combination per UNet call we measured (docs/schedulers.md). Only the engine imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from renderer.schedulers import karras_sigmas


@dataclass
class DPMPP2MSchedulerOutput(BaseOutput):
    """The sample at the next σ, and the denoiser's estimate of the clean sample at this one."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class DPMPP2MScheduler(SchedulerMixin, ConfigMixin):
    """DPM-Solver++(2M) (Lu et al. 2022) in EDM form, on any σ list (k-diffusion's sample_dpmpp_2m).

    Works with `StableVideoDiffusionPipeline`: `set_timesteps(sigmas=[...])` takes σ values (n + 1 of them, a final 0
    allowed), `timesteps` are SVD's c_noise = 0.25·ln σ, and the UNet runs once per step.
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
        self._step_index = None
        self._begin_index = None
        self._previous_denoised = None
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
        self._previous_denoised = None

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
             return_dict: bool = True) -> DPMPP2MSchedulerOutput | tuple:
        """One DPM-Solver++(2M) step from σ_i to σ_{i+1}; the first step is first order, a step to σ = 0 denoises."""
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        # Upcast: fp16 latents at σ ≈ 700 would lose the data-scale detail the update adds.
        x = sample.to(torch.float32)
        denoised = self._denoised(model_output.to(torch.float32), x, sigma)
        if sigma_next == 0:
            prev = denoised
        else:
            h = math.log(sigma / sigma_next)  # step in λ = −ln σ
            if self._previous_denoised is None:
                estimate = denoised
            else:
                r = math.log(float(self.sigmas[i - 1]) / sigma) / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * self._previous_denoised
            prev = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        self._previous_denoised = denoised
        self._step_index += 1
        prev = prev.to(model_output.dtype)
        if not return_dict:
            return (prev, denoised)
        return DPMPP2MSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
