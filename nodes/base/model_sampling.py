"""A model's noise levels: the sigma table of a discrete (1000-step) diffusion model.

The model floor builds it from a checkpoint's settings, handles carry it, the samplers read it:
betas from a scaled-linear schedule in float64, sigmas stored float32, and the U-Net given the
integer timestep nearest in log-sigma (the conventions ComfyUI users' seeds depend on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelSampling:
    """The sigma table of a discrete (1000-step) eps- or v-prediction model."""

    sigmas: torch.Tensor  # float32, ascending, one per training timestep
    log_sigmas: torch.Tensor
    prediction: str = "epsilon"  # or "v_prediction"

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
