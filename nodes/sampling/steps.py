"""What every sampler is built from: the denoiser and stepper types and the shared step formulas.

Samplers work in the sigma (Karras et al.) formulation: `denoise(x, sigma) -> x0 estimate`. The
helpers here are the pieces several methods share: the derivative dx/dsigma, the split of a step
into its deterministic and noise parts, log-sigma time, and the variable-step Adams-Bashforth
integrator behind `lms`, `ipndm_v` and `deis`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SamplerFn = Callable[..., torch.Tensor]


class NoiseSource(Protocol):
    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Stepper:
    """Per-step services for a sampler: progress/interrupt callback and a noise source for SDE steps."""

    callback: Callable[[int, torch.Tensor, torch.Tensor], None]
    noise: NoiseSource
    steps: int

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        self.callback(i, x, denoised)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE at (x, sigma), given the model's x0 estimate."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor,
                   eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step into a deterministic part down to sigma_down and fresh noise of sigma_up."""
    if not eta or float(sigma_to) == 0.0:
        return sigma_to, sigma_to * 0
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def neg_log_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """The time variable t = -log(sigma) of the DPM-Solver family."""
    return sigma.log().neg()


def lagrange_step_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial on t_i, t_{i-1}, ...

    The basis is a polynomial of degree < 4, so the integral is computed exactly.
    """
    nodes = [t[i - k] for k in range(order) if k != j]
    poly = np.poly1d([1.0])
    for node in nodes:
        poly *= np.poly1d([1.0, -node]) / (t[i - j] - node)
    antiderivative = poly.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


@torch.no_grad()
def adams_bashforth(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper,
                    max_order: int) -> torch.Tensor:
    """Variable-step Adams-Bashforth in sigma: integrate the Lagrange polynomial through past dx/dsigma.

    Linear multistep (`lms`), iPNDM with variable steps (`ipndm_v`) and tAB-DEIS in the
    variance-exploding parameterisation (`deis`) are all this integrator, with orders 4, 4 and 3.
    """
    grid = sigmas.detach().cpu().double().numpy()
    ds: list[torch.Tensor] = []  # oldest first
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        ds = [*ds, to_d(x, sigmas[i], denoised)][-max_order:]
        order = len(ds)
        coeffs = [lagrange_step_coefficient(order, grid, i, j) for j in range(order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
    return x


__all__ = ["Denoiser", "NoiseSource", "SamplerFn", "Stepper", "adams_bashforth", "ancestral_step",
           "lagrange_step_coefficient", "neg_log_sigma", "to_d"]
