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
