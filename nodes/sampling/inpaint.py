"""What the sampling loop adds for inpainting: the extra U-Net inputs and the per-step denoise mask.

- Inpainting U-Nets (9 input channels) also take a mask and the latent of the image with the masked
  area greyed out. InpaintModelConditioning puts both on the conditioning (`concat_latent_image`,
  `concat_mask`); otherwise the latent's noise mask and the latent itself are used (VAEEncodeForInpaint
  already greyed it), and with no mask at all a blank image under a full mask (plain txt2img).
- A MODEL may carry `options["denoise_mask_function"]` (DifferentialDiffusion): it turns the latent's
  noise mask into the mask used at the current noise level, called as
  `fn(sigma, mask, {"sampling": ModelSampling, "sigmas": the run's sigmas})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nodes.base.handles import ModelHandle
from nodes.base.resize import repeat_to_batch, resize_nchw

DENOISE_MASK_FUNCTION = "denoise_mask_function"
MaskFunction = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]

# The latent (sampling space) of an all-black image under the SD VAE: the "masked image" an
# inpainting U-Net is shown when there is nothing to keep.
_BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def latent_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A MASK ([B,H,W], [H,W] or [B,1,H,W]) resized bilinearly to the latent, one channel, latent's batch."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    m = F.interpolate(m[:, :1], size=like.shape[2:], mode="bilinear", align_corners=False)
    if m.shape[0] < like.shape[0]:
        m = m.repeat(math.ceil(like.shape[0] / m.shape[0]), 1, 1, 1)[: like.shape[0]]
    return m


def _concat_options(conditioning: Sequence[Any]) -> dict[str, Any]:
    for item in conditioning or ():
        opts = item[1] if len(item) > 1 else {}
        if opts.get("concat_latent_image") is not None:
            return opts
    return {}


def inpaint_concat(model: ModelHandle, positive: Sequence[Any], latent_in: torch.Tensor,
                   noise_mask: torch.Tensor | None) -> torch.Tensor:
    """The extra input channels of an inpainting U-Net, [B, 1 + C, h, w] in sampling space: mask, image."""
    opts = _concat_options(positive)
    image = opts.get("concat_latent_image")
    mask = opts.get("concat_mask", noise_mask)
    b, c, h, w = latent_in.shape
    if mask is None:
        blank = torch.tensor(_BLANK_LATENT[:c] + (0.0,) * max(0, c - len(_BLANK_LATENT)), device=latent_in.device)
        return torch.cat([torch.ones_like(latent_in[:, :1]), blank.view(1, c, 1, 1).expand(b, c, h, w)], dim=1)
    if image is None:
        image = latent_in
    else:
        image = model.latent_format.process_in(image.float()).to(latent_in.device)
        if image.shape[-2:] != (h, w):
            image = resize_nchw(image, w, h, "bilinear", "center")
        image = repeat_to_batch(image, b)
    mask = latent_mask(mask.to(latent_in.device), latent_in).round()
    return torch.cat([mask, image], dim=1)


def mask_function(model: ModelHandle, sigmas: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The mask to use at `sigma`, given the latent's noise mask: the model's mask function, or the mask."""
    fn: MaskFunction | None = model.options.get(DENOISE_MASK_FUNCTION)
    if fn is None:
        return lambda sigma, mask: mask
    extra = {"sampling": model.sampling, "sigmas": sigmas}
    return lambda sigma, mask: fn(sigma.reshape(-1), mask, extra)


def differential_mask(sigma: torch.Tensor, mask: torch.Tensor, extra: dict[str, Any],
                      strength: float = 1.0) -> torch.Tensor:
    """Differential diffusion: a pixel is repainted from the step whose progress reaches its mask value.

    With t the training timestep of a noise level, the threshold at the current level is
    (t_now - t_end) / (t_start - t_end), falling from 1 at the first step to 0 at the last; a pixel
    takes part where mask >= threshold. strength < 1 blends that binary mask with the soft one.
    """
    ms, sigmas = extra["sampling"], extra["sigmas"]
    sigma_to = max(float(sigmas[-1]), ms.sigma_min)
    ts = ms.timestep(torch.tensor([float(sigmas[0]), sigma_to, float(sigma.reshape(-1)[0])]))
    t_from, t_to, t_now = (float(t) for t in ts)
    threshold = (t_now - t_to) / (t_from - t_to) if t_from != t_to else 0.0
    binary = (mask >= threshold).to(mask.dtype)
    if strength and strength < 1:
        return strength * binary + (1 - strength) * mask
    return binary


__all__ = ["DENOISE_MASK_FUNCTION", "differential_mask", "inpaint_concat", "latent_mask", "mask_function"]
