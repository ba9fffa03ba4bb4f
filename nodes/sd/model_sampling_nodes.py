"""ModelSamplingDiscrete, ModelSamplingContinuousEDM and ModelSamplingContinuousV: a MODEL with another
sigma table and prediction type (nodes/sampling/model_sampling.py), ComfyUI's names and inputs.

The handle's `sampling` value is replaced; the U-Net is shared and untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from graph import BooleanInput, ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.handles import SDXL_LATENT_RGB, LatentFormat, ModelHandle
from nodes.sampling import model_sampling

from .unet_patch_nodes import check_model

_MODEL_OUT = [OutputSpec(type="MODEL", name="MODEL")]


@dataclass(frozen=True, kw_only=True)
class NormalizedLatentFormat(LatentFormat):
    """Latents standardised per channel before scaling (Playground v2.5's SDXL-VAE latents)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=latent.dtype, device=latent.device).view(shape)
        std = torch.tensor(self.std, dtype=latent.dtype, device=latent.device).view(shape)
        return mean, std

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


PLAYGROUND_V25 = NormalizedLatentFormat(scale_factor=0.5, mean=(-1.6574, 1.886, -1.383, 2.5155),
                                        std=(8.4927, 5.9022, 6.5498, 5.2299), rgb_factors=SDXL_LATENT_RGB)


def _sigma(name: str, default: float) -> FloatInput:
    return FloatInput(name=name, default=default, min=0.0, max=1000.0, step=0.001, round=False)


def _check_range(node: str, sigma_max: float, sigma_min: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"{node}: inputs 'sigma_min' and 'sigma_max' must satisfy 0 < sigma_min < sigma_max, got "
                         f"{sigma_min} and {sigma_max}")


class ModelSamplingDiscrete(Node):
    SCHEMA = NodeSchema(node_type="ModelSamplingDiscrete", display_name="ModelSamplingDiscrete",
                        category="advanced/model",
                        description="Samples the model as an eps, v-prediction, LCM or x0 model, optionally with "
                                    "the noise table rescaled to zero terminal SNR.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="sampling", choices=["eps", "v_prediction", "lcm", "x0"]),
                                BooleanInput(name="zsnr", default=False)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, sampling: str, zsnr: bool) -> tuple[ModelHandle]:
        model = check_model("ModelSamplingDiscrete", model)
        if sampling not in ("eps", "v_prediction", "lcm", "x0"):
            raise ValueError(f"ModelSamplingDiscrete: input 'sampling' must be eps, v_prediction, lcm or x0, "
                             f"got {sampling!r}")
        return (replace(model, sampling=model_sampling.discrete(sampling, bool(zsnr))),)


class ModelSamplingContinuousEDM(Node):
    SCHEMA = NodeSchema(node_type="ModelSamplingContinuousEDM", display_name="ModelSamplingContinuousEDM",
                        category="advanced/model",
                        description="Samples the model over continuous noise levels (EDM-trained models).",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="sampling", choices=["v_prediction", "edm", "edm_playground_v2.5",
                                                                     "eps"]),
                                _sigma("sigma_max", 120.0), _sigma("sigma_min", 0.002)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, sampling: str, sigma_max: float, sigma_min: float
                ) -> tuple[ModelHandle]:
        model = check_model("ModelSamplingContinuousEDM", model)
        _check_range("ModelSamplingContinuousEDM", sigma_max, sigma_min)
        if sampling not in ("v_prediction", "edm", "edm_playground_v2.5", "eps"):
            raise ValueError(f"ModelSamplingContinuousEDM: unknown 'sampling' {sampling!r}")
        new = replace(model, sampling=model_sampling.continuous_edm(sampling, sigma_max, sigma_min))
        if sampling == "edm_playground_v2.5":
            new = replace(new, latent_format=PLAYGROUND_V25)
        return (new,)


class ModelSamplingContinuousV(Node):
    SCHEMA = NodeSchema(node_type="ModelSamplingContinuousV", display_name="ModelSamplingContinuousV",
                        category="advanced/model",
                        description="Samples the model as a continuous-time v-prediction model.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="sampling", choices=["v_prediction"]),
                                _sigma("sigma_max", 500.0), _sigma("sigma_min", 0.03)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, sampling: str, sigma_max: float, sigma_min: float
                ) -> tuple[ModelHandle]:
        model = check_model("ModelSamplingContinuousV", model)
        _check_range("ModelSamplingContinuousV", sigma_max, sigma_min)
        return (replace(model, sampling=model_sampling.continuous_v(sigma_max, sigma_min)),)


NODES = [ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingContinuousV]
