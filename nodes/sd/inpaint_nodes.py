"""Inpainting nodes: InpaintModelConditioning and DifferentialDiffusion, with ComfyUI's names and inputs.

InpaintModelConditioning works with both kinds of model: an inpainting U-Net reads the masked image
and mask it attaches to the conditioning; any model honours the noise mask it puts on the latent.
DifferentialDiffusion returns the same model with a denoise-mask option that the sampling loop calls
at every step (no weights are copied).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from graph import BooleanInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.handles import ModelHandle, VaeHandle
from nodes.base.resize import repeat_to_batch
from nodes.sampling.inpaint import DENOISE_MASK_FUNCTION, differential_mask
from nodes.sd.vae import crop_to_multiple, encode

Conditioning = list[list[Any]]


def _check_mask(node: str, mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{node}: input 'mask' must be a MASK [batch, height, width], got {shape}")
    return mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()


class InpaintModelConditioning(Node):
    SCHEMA = NodeSchema(
        node_type="InpaintModelConditioning", display_name="InpaintModelConditioning",
        category="conditioning/inpaint",
        description="Encode the image for inpainting: the masked image and mask go on the conditioning (for "
                    "inpainting models), the image's latent and (optionally) the mask as its noise mask.",
        inputs=[InputSpec(name="positive", type="CONDITIONING"), InputSpec(name="negative", type="CONDITIONING"),
                InputSpec(name="vae", type="VAE"), InputSpec(name="pixels", type="IMAGE"),
                InputSpec(name="mask", type="MASK"),
                BooleanInput(name="noise_mask", default=True,
                             tooltip="Add a noise mask to the latent so sampling will only happen within the "
                                     "mask. Might improve results or completely break things depending on the "
                                     "model.")],
        outputs=[OutputSpec(type="CONDITIONING", name="positive"), OutputSpec(type="CONDITIONING", name="negative"),
                 OutputSpec(type="LATENT", name="latent")],
    )

    def execute(self, ctx, *, positive: Conditioning, negative: Conditioning, vae: VaeHandle, pixels: torch.Tensor,
                mask: torch.Tensor, noise_mask: bool = True) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        node = "InpaintModelConditioning"
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] < 3:
            shape = list(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"{node}: input 'pixels' must be an IMAGE [batch, height, width, 3], got {shape}")
        pixels = pixels[..., :3]
        h, w = pixels.shape[1], pixels.shape[2]
        m = F.interpolate(_check_mask(node, mask), size=(h, w), mode="bilinear", align_corners=False)
        ds = vae.downscale
        cropped = crop_to_multiple(pixels, ds)
        m = crop_to_multiple(m.movedim(1, -1), ds).movedim(-1, 1)  # [B, 1, H', W'], same crop as the pixels
        keep = (1.0 - m.round()).movedim(1, -1)  # masked pixels become 0.5 grey
        if keep.shape[0] not in (1, cropped.shape[0]):
            keep = repeat_to_batch(keep, cropped.shape[0])
        masked = (cropped - 0.5) * keep + 0.5
        concat_latent = encode(vae, masked)
        latent = {"samples": encode(vae, cropped, ctx.progress if ctx is not None else None)}
        if noise_mask:
            latent["noise_mask"] = m
        values = {"concat_latent_image": concat_latent, "concat_mask": m}
        out = [[[cond, {**opts, **values}] for cond, opts in c] for c in (positive, negative)]
        return out[0], out[1], latent


class DifferentialDiffusion(Node):
    SCHEMA = NodeSchema(
        node_type="DifferentialDiffusion", display_name="Differential Diffusion", category="_for_testing",
        experimental=True,
        description="Soft-mask inpainting: each pixel is repainted from the step its mask value reaches.",
        inputs=[InputSpec(name="model", type="MODEL"),
                FloatInput(name="strength", default=1.0, min=0.0, max=1.0, step=0.01, optional=True)],
        outputs=[OutputSpec(type="MODEL")],
    )

    def execute(self, ctx, *, model: ModelHandle, strength: float = 1.0) -> tuple[ModelHandle]:
        if not isinstance(model, ModelHandle):
            raise ValueError(f"DifferentialDiffusion: input 'model' must be a MODEL, got {type(model).__name__}")
        fn = partial(differential_mask, strength=float(strength))
        return (replace(model, options={**model.options, DENOISE_MASK_FUNCTION: fn}),)


NODES = [InpaintModelConditioning, DifferentialDiffusion]
