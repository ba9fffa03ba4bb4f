"""The opaque values that travel between Stable Diffusion nodes: MODEL, CLIP and VAE handles.

A handle wraps loaded modules plus what the nodes need to use them (prediction type, latent scale,
clip skip). Handles are cheap to copy: a node that changes a setting (CLIPSetLastLayer, a LoRA)
returns a new handle sharing the same modules, never a copy of the weights. The model cache counts
a handle as size 0: the model manager owns the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import torch

from nodes.base.model_sampling import ModelSampling

# Latent -> RGB projections for cheap previews while sampling (4 latent channels -> 3 colours).
SD_LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                 (-0.2120, -0.2616, -0.7177))
SDXL_LATENT_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                   (-0.3165, -0.2492, -0.2188))


@dataclass(frozen=True, kw_only=True)
class LatentFormat:
    """How a model's latents relate to its VAE's: scale for sampling and a preview projection."""

    scale_factor: float
    channels: int = 4
    rgb_factors: tuple[tuple[float, float, float], ...] = SD_LATENT_RGB

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor

    def preview_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] latent (sampling space) -> [B, h, w, 3] image in 0..1, for previews."""
        factors = torch.tensor(self.rgb_factors, dtype=torch.float32)
        if latent.shape[1] != factors.shape[0]:
            factors = torch.zeros(latent.shape[1], 3)
        rgb = torch.einsum("bchw,cr->bhwr", latent.float().cpu(), factors)
        return ((rgb + 1) / 2).clamp(0, 1)


class _Handle:
    """What all handles share: the model cache counts them as size 0 (the model manager owns the weights)."""

    def __sumie_size__(self) -> int:
        return 0


class _Patchable(_Handle):
    """A handle whose weights a LoRA may patch: patching returns a new handle, never copies weights."""

    patches: tuple[Any, ...]

    def with_patches(self, *patches: Any) -> Self:
        return replace(self, patches=self.patches + patches)  # type: ignore[type-var]


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelHandle(_Patchable):
    """MODEL: a denoising U-Net (diffusers UNet2DConditionModel) and how to sample with it."""

    unet: Any
    kind: str  # sd1, sd2, sd1_inpaint, sd2_inpaint, sdxl, sdxl_inpaint, sdxl_refiner
    sampling: ModelSampling
    latent_format: LatentFormat
    source: Path | None = None
    manager: Any = None  # the ModelManager that owns the weights (device placement)
    patches: tuple[Any, ...] = ()  # weight patches (LoRA) applied while the model is in use
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def is_sdxl(self) -> bool:
        return self.kind.startswith("sdxl")


@dataclass(frozen=True, kw_only=True, eq=False)
class ClipHandle(_Patchable):
    """CLIP: one or two text encoders with their tokenizers and the layer to condition on."""

    encoders: tuple[Any, ...]  # transformers CLIPTextModel / CLIPTextModelWithProjection
    specs: tuple[Any, ...]  # nodes.models.detect.TextEncoderSpec, one per encoder
    kind: str
    source: Path | None = None
    manager: Any = None
    layer: int | None = None  # CLIPSetLastLayer: -1 last, -2 penultimate, ...; None = family default
    patches: tuple[Any, ...] = ()

    def with_layer(self, layer: int) -> ClipHandle:
        return replace(self, layer=layer)


@dataclass(frozen=True, kw_only=True, eq=False)
class VaeHandle(_Handle):
    """VAE: a diffusers AutoencoderKL; LATENT values stay in its raw (unscaled) space."""

    vae: Any
    scale_factor: float
    source: Path | None = None
    manager: Any = None

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)
