"""iPNDM with variable steps: Adams–Bashforth in σ on the probability-flow ODE, for any σ list.

In EDM form the probability-flow ODE is dx/dσ = (x − D(x; σ))/σ. A linear multistep method integrates the polynomial
through the last few slopes over the next step; with equal steps and order 3 these are PNDM's pseudo linear multistep
weights (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"), which Zhang & Chen (2023,
"Fast Sampling of Diffusion Models with Exponential Integrator", DEIS) start from the first step ("improved PNDM",
iPNDM). On a schedule with unequal steps, such as Align Your Steps, the weights must follow the actual step sizes;
they are computed here exactly from the σ grid (the variable-step form of Adams–Bashforth).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

from renderer.samplers.base import EDMSigmaScheduler


def adams_bashforth_weights(nodes: list[float], start: float, end: float) -> list[float]:
    """Weights w_j with ∫_start^end p(σ) dσ = Σ w_j·p(nodes[j]) for every polynomial p of degree < len(nodes)."""
    # In units of the step (s = (σ − start)/h) the nodes are O(1) numbers, so the power-basis polynomials below stay
    # well conditioned even at σ ≈ 700.
    h = end - start
    scaled = [(node - start) / h for node in nodes]
    weights = []
    for j, node in enumerate(scaled):
        others = [s for k, s in enumerate(scaled) if k != j]
        # The Lagrange basis polynomial of node j, integrated exactly over s ∈ [0, 1].
        basis = np.polynomial.Polynomial([1.0])
        for other in others:
            basis = basis * np.polynomial.Polynomial([-other, 1.0]) / (node - other)
        antiderivative = basis.integ()
        weights.append(h * float(antiderivative(1.0) - antiderivative(0.0)))
    return weights


class IPNDMScheduler(EDMSigmaScheduler):
    """iPNDM (Zhang & Chen 2023) with variable steps, order up to `max_order`, on any σ list.

    One UNet call per step. Step i uses the slopes of the last min(i + 1, max_order) steps; a step to σ = 0 returns
    the denoised sample (its slope (x − D)/σ is undefined there). Order 3 is the default: order 4's variable-step
    weights stop converging on schedules with abrupt changes of step size once there are many steps.
    """

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        sigma_data: float = 1.0,
        prediction_type: str = "v_prediction",
        num_train_timesteps: int = 1000,
        max_order: int = 3,
    ):
        if max_order not in (1, 2, 3, 4):
            raise ValueError(f"max_order must be 1, 2, 3 or 4, got {max_order!r}")
        super().__init__(sigma_min, sigma_max, sigma_data, prediction_type, num_train_timesteps)

    def _reset_history(self) -> None:
        self._slopes: list[torch.Tensor] = []

    def _update(self, x: torch.Tensor, denoised: torch.Tensor, i: int) -> torch.Tensor:
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        if sigma_next == 0:
            self._slopes.clear()
            return denoised
        slope = (x - denoised) / sigma
        self._slopes = ([slope] + self._slopes)[: self.config.max_order]
        nodes = [float(self.sigmas[i - k]) for k in range(len(self._slopes))]
        weights = adams_bashforth_weights(nodes, sigma, sigma_next)
        prev = x
        for weight, d in zip(weights, self._slopes):
            prev = prev + weight * d
        return prev
