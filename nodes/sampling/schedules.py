"""Noise levels: the discrete diffusion model's sigma table and the named step schedules.

Follows the conventions ComfyUI users' seeds depend on (see shared docs, comfy-compat section 8):
betas from a scaled-linear schedule in float64, sigmas stored float32, the "normal" schedule
interpolating linearly in log-sigma between integer timesteps, and the U-Net given the integer
timestep nearest in log-sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ModelSampling:
    """The sigma table of a discrete (1000-step) eps- or v-prediction model."""

    sigmas: torch.Tensor  # float32, ascending, one per training timestep
    log_sigmas: torch.Tensor
    prediction: str = "epsilon"  # or "v_prediction"; also "lcm", "x0", "edm" (nodes/sampling/model_sampling.py)
    sigma_data: float = 1.0

    @classmethod
    def discrete(cls, *, prediction: str = "epsilon", beta_start: float = 0.00085, beta_end: float = 0.012,
                 timesteps: int = 1000) -> ModelSampling:
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction type {prediction!r}: use 'epsilon' or 'v_prediction'")
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()
        return cls(sigmas=sigmas, log_sigmas=sigmas.log(), prediction=prediction)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The integer training timestep nearest to `sigma` in log space (what the U-Net is given)."""
        log_sigma = sigma.float().log().to(self.log_sigmas.device)
        dists = log_sigma.reshape(-1, 1) - self.log_sigmas.reshape(1, -1)
        return dists.abs().argmin(dim=1).reshape(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolated linearly in log-sigma."""
        t = timestep.float().clamp(0, len(self.sigmas) - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The U-Net's input at noise level `sigma`: x scaled to unit variance."""
        return x * (1.0 / (sigma**2 + self.sigma_data**2) ** 0.5)

    def calculate_denoised(self, sigma: torch.Tensor, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The x0 estimate from the U-Net's output `out` for the noisy `x`, by prediction type."""
        sd2 = self.sigma_data**2
        if self.prediction == "v_prediction":
            return x * (sd2 / (sigma**2 + sd2)) + out * (-(sigma * self.sigma_data) / (sigma**2 + sd2) ** 0.5)
        if self.prediction == "edm":
            return x * (sd2 / (sigma**2 + sd2)) + out * (sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5)
        if self.prediction == "x0":
            return out
        x0 = x - out * sigma
        if self.prediction == "lcm":  # LCM's consistency boundary condition (sigma_data 0.5, timestep x 10)
            t = self.timestep(sigma).float() * 10.0
            c_skip = 0.25 / (t**2 + 0.25)
            c_out = t / (t**2 + 0.25) ** 0.5
            return c_out * x0 + c_skip * x
        return x0


# -- schedules: each returns steps + 1 sigmas, descending, ending in 0 ---------------------------------
def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.float(), sigmas.new_zeros(1, dtype=torch.float32)])


def normal(ms: ModelSampling, steps: int) -> torch.Tensor:
    start = float(ms.timestep(torch.tensor(ms.sigma_max)))
    end = float(ms.timestep(torch.tensor(ms.sigma_min)))
    t = torch.linspace(start, end, steps, dtype=torch.float32)
    return _with_zero(ms.sigma(t))


def sgm_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    start = float(ms.timestep(torch.tensor(ms.sigma_max)))
    end = float(ms.timestep(torch.tensor(ms.sigma_min)))
    t = torch.linspace(start, end, steps + 1, dtype=torch.float32)[:-1]
    return _with_zero(ms.sigma(t))


def simple(ms: ModelSampling, steps: int) -> torch.Tensor:
    stride = len(ms.sigmas) / steps
    picked = [float(ms.sigmas[-(1 + int(x * stride))]) for x in range(steps)]
    return _with_zero(torch.tensor(picked))


def ddim_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    stride = max(len(ms.sigmas) // steps, 1)
    picked = [float(ms.sigmas[x]) for x in range(1, len(ms.sigmas), stride)]
    return _with_zero(torch.tensor(picked[::-1]))


def karras(ms: ModelSampling, steps: int, *, rho: float = 7.0, sigma_min: float | None = None,
           sigma_max: float | None = None) -> torch.Tensor:
    lo = ms.sigma_min if sigma_min is None else sigma_min
    hi = ms.sigma_max if sigma_max is None else sigma_max
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _with_zero(sigmas)


def exponential(ms: ModelSampling, steps: int, *, sigma_min: float | None = None,
                sigma_max: float | None = None) -> torch.Tensor:
    lo = ms.sigma_min if sigma_min is None else sigma_min
    hi = ms.sigma_max if sigma_max is None else sigma_max
    return _with_zero(torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64).exp())


def beta(ms: ModelSampling, steps: int, *, alpha: float = 0.6, beta_param: float = 0.6) -> torch.Tensor:
    """Timesteps spaced by the quantiles of a Beta(0.6, 0.6) distribution (denser at both ends)."""
    from scipy.stats import beta as beta_dist

    total = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(beta_dist.ppf(quantiles, alpha, beta_param) * total)
    picked: list[float] = []
    last = -1.0
    for t in ts:
        if t != last:
            picked.append(float(ms.sigmas[int(t)]))
        last = t
    return _with_zero(torch.tensor(picked))


def linear_quadratic(ms: ModelSampling, steps: int, *, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """Linear in noise level for the first half of the steps, quadratic after (for few-step models)."""
    if steps == 1:
        levels = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        levels = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * diff / (quadratic_steps**2)
        const = quad_coef * linear_steps**2
        levels += [quad_coef * i**2 + linear_coef * i + const for i in range(linear_steps, steps)]
        levels = [1.0 - x for x in levels + [1.0]]
    return torch.tensor(levels, dtype=torch.float32) * ms.sigma_max


def kl_optimal(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Evenly spaced in arctan(sigma) between the model's extremes."""
    lo, hi = math.atan(ms.sigma_min), math.atan(ms.sigma_max)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    return _with_zero(torch.tan(hi + ramp * (lo - hi)))


SCHEDULERS: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}


def schedule(ms: ModelSampling, name: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The sigmas for `steps` steps; `denoise < 1` keeps the tail of a longer schedule (img2img)."""
    try:
        make = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}") from None
    if steps <= 0:
        return torch.zeros(0)
    if denoise >= 0.9999:
        return make(ms, steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    total = int(steps / denoise)
    return make(ms, total)[-(steps + 1):]
