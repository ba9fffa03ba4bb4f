"""The named step schedules: which sigmas of a model's table (nodes.base.model_sampling) to visit.

Follows the conventions ComfyUI users' seeds depend on (see shared docs, comfy-compat section 8):
the "normal" schedule interpolates linearly in log-sigma between integer timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from nodes.base.model_sampling import ModelSampling


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
