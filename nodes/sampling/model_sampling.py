"""Model-sampling overrides: other sigma tables and prediction types for a MODEL.

A MODEL's `sampling` (a `ModelSampling`) says how noise levels map to the U-Net's timestep and how its
output turns into an x0 estimate. The ModelSampling* nodes swap it for one of these, which is a plain
value on the handle: nothing in the U-Net changes, so removing the node gives the base model back.

- `discrete(...)`: the 1000-step table of SD 1.x/2.x/XL with a chosen prediction type; "lcm" uses the
  50-step grid LCM models were distilled on; `zsnr` rescales the table to zero terminal SNR.
- `continuous_edm(...)` / `continuous_v(...)`: log-uniform continuous noise levels (EDM / v-prediction
  models such as Playground v2.5 and SD 2.x 768-v finetunes trained that way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nodes.base.model_sampling import ModelSampling

ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08  # what the zero-SNR table ends on (not 0: sigma stays finite)
PREDICTIONS = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "lcm", "x0": "x0", "edm": "edm"}


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift and scale sqrt(alpha_bar) so the last timestep has (almost) zero signal."""
    alphas_bar_sqrt = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


@dataclass(frozen=True)
class DistilledSampling(ModelSampling):
    """A table of every `skip_steps`-th training timestep (LCM's 50-step grid); timesteps stay 0..999."""

    skip_steps: int = 20

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.float().log().to(self.log_sigmas.device)
        dists = log_sigma.reshape(-1, 1) - self.log_sigmas.reshape(1, -1)
        index = dists.abs().argmin(dim=1).reshape(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = ((timestep.float() - (self.skip_steps - 1)) / self.skip_steps).clamp(0, len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t - low
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


@dataclass(frozen=True)
class ContinuousEDMSampling(ModelSampling):
    """Continuous noise levels: the U-Net takes 0.25 * log(sigma) as its timestep."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * sigma.float().log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep.float() / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return math.exp((hi - lo) * (1.0 - percent) + lo)


@dataclass(frozen=True)
class ContinuousVSampling(ContinuousEDMSampling):
    """Continuous v-prediction: the timestep is atan(sigma) scaled to 0..1."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.float().atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep.float() * math.pi / 2).tan()


def discrete(sampling: str, zsnr: bool = False) -> ModelSampling:
    """ModelSamplingDiscrete: the SD noise table with prediction `sampling` (eps, v_prediction, lcm, x0)."""
    base = ModelSampling.discrete()
    sigmas = base.sigmas
    if zsnr:
        sigmas = rescale_zero_terminal_snr(sigmas).float()
    prediction = PREDICTIONS[sampling]
    if sampling == "lcm":
        skip = len(sigmas) // 50
        picked = sigmas[skip - 1::skip].clone()  # timesteps 19, 39, ..., 999
        return DistilledSampling(sigmas=picked, log_sigmas=picked.log(), prediction=prediction, skip_steps=skip)
    return ModelSampling(sigmas=sigmas, log_sigmas=sigmas.log(), prediction=prediction)


def _log_uniform(sigma_min: float, sigma_max: float) -> torch.Tensor:
    return torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()


def continuous_edm(sampling: str, sigma_max: float, sigma_min: float) -> ModelSampling:
    """ModelSamplingContinuousEDM: eps / v_prediction (sigma_data 1) or edm (sigma_data 0.5)."""
    sigmas = _log_uniform(sigma_min, sigma_max)
    sigma_data = 0.5 if sampling.startswith("edm") else 1.0
    prediction = "edm" if sampling.startswith("edm") else PREDICTIONS[sampling]
    return ContinuousEDMSampling(sigmas=sigmas, log_sigmas=sigmas.log(), prediction=prediction, sigma_data=sigma_data)


def continuous_v(sigma_max: float, sigma_min: float) -> ModelSampling:
    """ModelSamplingContinuousV: v-prediction over log-uniform levels, atan timesteps."""
    sigmas = _log_uniform(sigma_min, sigma_max)
    return ContinuousVSampling(sigmas=sigmas, log_sigmas=sigmas.log(), prediction="v_prediction")


__all__ = ["ContinuousEDMSampling", "ContinuousVSampling", "DistilledSampling", "continuous_edm", "continuous_v",
           "discrete", "rescale_zero_terminal_snr"]
