"""Sigma schedules that are fixed tables or closed formulas, not functions of a model's sigma table.

- Align Your Steps (Sabour et al., 2024): NVIDIA's optimised 10-step noise levels per model family,
  stretched to other step counts by interpolating linearly in log-sigma.
- GITS (Chen et al., 2024): per-coefficient tables for 2..20 steps (`gits_levels`), interpolated the
  same way beyond 20 steps.
- Polyexponential and VP (Karras et al. 2022; Song et al. 2021): closed formulas.

Each returns `steps + 1` float32 sigmas ending in 0, like every other schedule; `denoise < 1` keeps the
last round(steps * denoise) steps of the full schedule (how ComfyUI's table schedulers do img2img).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .gits_levels import GITS_LEVELS, GITS_ROWS

# The published AYS noise levels (10 steps, 11 levels) for SD 1.x, SDXL and Stable Video Diffusion.
AYS_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
AYS_MODEL_TYPES = tuple(AYS_LEVELS)
GITS_COEFFS = tuple(sorted(GITS_ROWS))
GITS_MAX_TABLE_STEPS = 20


def loglinear_interp(levels: Sequence[float], count: int) -> np.ndarray:
    """`count` levels spread evenly over a descending sequence, interpolating linearly in log(level)."""
    ascending = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    positions = np.linspace(0.0, 1.0, len(ascending))
    wanted = np.linspace(0.0, 1.0, count)
    return np.exp(np.interp(wanted, positions, ascending))[::-1].copy()


def _tail(levels: Sequence[float], steps: int, denoise: float) -> torch.Tensor:
    """The last round(steps * denoise) steps of a full schedule, its final level replaced by 0."""
    if denoise <= 0.0:
        return torch.zeros(0)
    kept = steps if denoise >= 1.0 else round(steps * denoise)
    out = torch.tensor(list(levels)[-(kept + 1):], dtype=torch.float64)
    out[-1] = 0.0
    return out.float()


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """AlignYourStepsScheduler: the published levels, log-linearly resampled to `steps` steps."""
    try:
        levels: Sequence[float] = AYS_LEVELS[model_type]
    except KeyError:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {', '.join(AYS_MODEL_TYPES)}") from None
    if steps + 1 != len(levels):
        levels = loglinear_interp(levels, steps + 1).tolist()
    return _tail(levels, steps, denoise)


def gits_row(coeff: float, steps: int) -> list[float]:
    """The published GITS levels for `steps` steps (2..20) at `coeff` (a multiple of 0.05 in 0.80..1.50)."""
    rows = GITS_ROWS.get(round(coeff, 2))
    if rows is None:
        raise ValueError(f"coeff {coeff} has no GITS table; use a multiple of 0.05 from 0.80 to 1.50")
    inner = [GITS_LEVELS[int(i)] for i in rows[steps - 2].split()]
    return [GITS_LEVELS[0], *inner, GITS_LEVELS[-1]]


def gits(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """GITSScheduler: the table row for `steps`, or the 20-step row resampled beyond 20 steps."""
    if steps < 2:
        raise ValueError(f"GITS needs at least 2 steps, got {steps}")
    if steps <= GITS_MAX_TABLE_STEPS:
        levels: Sequence[float] = gits_row(coeff, steps)
    else:
        levels = loglinear_interp(gits_row(coeff, GITS_MAX_TABLE_STEPS), steps + 1).tolist()
    return _tail(levels, steps, denoise)


def polyexponential(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """sigma_i = exp(log sigma_min + (1 - i/(n-1))^rho * (log sigma_max - log sigma_min)), then 0.

    rho = 1 is the exponential schedule; larger rho spends more steps at low noise.
    """
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must be above 0 (the schedule is spaced in log-sigma)")
    ramp = torch.linspace(1, 0, steps) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return torch.cat([sigmas.float(), torch.zeros(1)])


def vp(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving SDE's noise levels: sigma(t) = sqrt(exp(beta_d t²/2 + beta_min t) - 1)
    at t evenly spaced from 1 down to eps_s, then 0."""
    t = torch.linspace(1, eps_s, steps)
    sigmas = torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t))
    return torch.cat([sigmas.float(), torch.zeros(1)])


__all__ = ["AYS_LEVELS", "AYS_MODEL_TYPES", "GITS_COEFFS", "align_your_steps", "gits", "gits_row",
           "loglinear_interp", "polyexponential", "vp"]
