"""DPM-Solver++(2M) on any σ list, for EDM models such as SVD.

diffusers' EDMDPMSolverMultistepScheduler only makes its own Karras/exponential schedule, and its
DPMSolverMultistepScheduler hands SVD integer timesteps; neither runs DPM++ 2M on the Align Your Steps σ.
"""

from __future__ import annotations

import math

import torch

from renderer.samplers.base import EDMSchedulerOutput, EDMSigmaScheduler

# The old name of the step output, kept for code that imported it.
DPMPP2MSchedulerOutput = EDMSchedulerOutput


class DPMPP2MScheduler(EDMSigmaScheduler):
    """DPM-Solver++(2M) (Lu et al. 2022) in EDM form, on any σ list (k-diffusion's sample_dpmpp_2m).

    Second order from the second step on; a step to σ = 0 returns the denoised sample.
    """

    def _reset_history(self) -> None:
        self._previous_denoised = None

    def _update(self, x: torch.Tensor, denoised: torch.Tensor, i: int) -> torch.Tensor:
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
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
        return prev
