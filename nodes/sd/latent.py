"""Latent nodes: empty latents, resizing, batches, compositing, noise masks.

A LATENT is a dict `{"samples": [B, C, h, w]}` in the VAE's raw (unscaled) space, optionally with
`"noise_mask"` ([B or 1, 1, H, W], 1 = regenerate) and `"batch_index"` (which draw of the seeded noise
each item uses, so one image of a batch can be reproduced alone). Nodes never modify their inputs:
the dict is copied and tensors replaced.

Pixel sizes are turned into latent sizes by floor division by 8, as ComfyUI does: a 520-pixel wide
EmptyLatentImage is 65 latents wide, and a 516-pixel one is 64 (decoded to 512 pixels).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION, Limits
from nodes.base.resize import CROP_METHODS, UPSCALE_METHODS, repeat_to_batch, resize_nchw

LATENT_DOWNSCALE = 8
LATENT_CHANNELS = 4
# Rough peak bytes per output pixel of decoding a latent with an SD VAE in fp32: the decoder's last
# blocks hold a few 128-channel full-resolution activations at once (128 * 4 bytes * ~2 buffers).
DECODE_BYTES_PER_PIXEL = 1024

Latent = dict[str, Any]


def _latent_in(name: str = "samples") -> InputSpec:
    return InputSpec(name=name, type="LATENT")


def _latent_out() -> list[OutputSpec]:
    return [OutputSpec(type="LATENT")]


def memory_estimate(pixels: int) -> str:
    """Human-readable memory an image of `pixels` pixels would take to decode (for error messages)."""
    return f"~{pixels * DECODE_BYTES_PER_PIXEL / 1e9:.1f} GB"


def check_pixels(node: str, width: int | None, height: int | None, batch: int | None, limits: Limits) -> str | bool:
    """True, or a message when width x height x batch is more than the server allows."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height, batch)):
        return True  # linked values are not known before the run
    pixels = width * height * batch
    if batch > limits.max_batch:
        return f"{node}: batch_size {batch} is more than the limit of {limits.max_batch}"
    if pixels > limits.max_pixels:
        return (f"{node}: {width}x{height} x batch {batch} is {pixels:,} pixels, more than the limit of "
                f"{limits.max_pixels:,}; it would need {memory_estimate(pixels)} to decode. Use a smaller size "
                "or batch.")
    return True


# ------------------------------------------------------------------------------------------------ nodes

def _size_input(name: str, *, minimum: int = 16, default: int = 512) -> IntInput:
    return IntInput(name=name, default=default, min=minimum, max=MAX_RESOLUTION, step=8)


class EmptyLatentImage(Node):
    SCHEMA = NodeSchema(
        node_type="EmptyLatentImage", display_name="Empty Latent Image", category="latent",
        description="A batch of all-zero latents to start text-to-image sampling from.",
        inputs=[_size_input("width"), _size_input("height"),
                IntInput(name="batch_size", default=1, min=1, max=4096,
                         tooltip="The number of latent images in the batch.")],
        outputs=_latent_out(),
    )

    def validate_inputs(self, *, limits: Limits, width: Any = None, height: Any = None, batch_size: Any = None,
                        **_: Any) -> str | bool:
        return check_pixels("EmptyLatentImage", width, height, batch_size, limits)

    def execute(self, ctx, *, width: int, height: int, batch_size: int) -> tuple[Latent]:
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // LATENT_DOWNSCALE, width // LATENT_DOWNSCALE])
        return ({"samples": samples},)


class LatentUpscale(Node):
    SCHEMA = NodeSchema(
        node_type="LatentUpscale", display_name="Upscale Latent", category="latent",
        description="Resize latents to a pixel size; 0 for one side keeps the aspect ratio, 0 for both "
                    "leaves them unchanged.",
        inputs=[_latent_in(), ComboInput(name="upscale_method", choices=UPSCALE_METHODS),
                _size_input("width", minimum=0), _size_input("height", minimum=0),
                ComboInput(name="crop", choices=CROP_METHODS)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples: Latent, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (samples,)
        x = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(x.shape[-1] * height / x.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(x.shape[-2] * width / x.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = resize_nchw(x, width // LATENT_DOWNSCALE, height // LATENT_DOWNSCALE, upscale_method, crop)
        return (out,)


class LatentUpscaleBy(Node):
    SCHEMA = NodeSchema(
        node_type="LatentUpscaleBy", display_name="Upscale Latent By", category="latent",
        inputs=[_latent_in(), ComboInput(name="upscale_method", choices=UPSCALE_METHODS),
                FloatInput(name="scale_by", default=1.5, min=0.01, max=8.0, step=0.01)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        x = samples["samples"]
        width, height = max(1, round(x.shape[-1] * scale_by)), max(1, round(x.shape[-2] * scale_by))
        out = dict(samples)
        out["samples"] = resize_nchw(x, width, height, upscale_method)
        return (out,)


class LatentFromBatch(Node):
    SCHEMA = NodeSchema(
        node_type="LatentFromBatch", display_name="Latent From Batch", category="latent/batch",
        description="Take items out of a batch; they keep their batch_index, so sampling them alone gives "
                    "the same noise (and image) as in the full batch.",
        inputs=[_latent_in(), IntInput(name="batch_index", default=0, min=0, max=63),
                IntInput(name="length", default=1, min=1, max=64)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        x = samples["samples"]
        total = x.shape[0]
        start = min(total - 1, batch_index)
        length = min(total - start, length)
        out = dict(samples)
        out["samples"] = x[start:start + length].clone()
        mask = samples.get("noise_mask")
        if mask is not None:
            if mask.shape[0] == 1:
                out["noise_mask"] = mask.clone()
            else:
                out["noise_mask"] = repeat_to_batch(mask, total)[start:start + length].clone()
        indices = samples.get("batch_index")
        if indices is None:
            out["batch_index"] = list(range(start, start + length))
        else:
            out["batch_index"] = list(indices)[start:start + length]
        return (out,)


class RepeatLatentBatch(Node):
    SCHEMA = NodeSchema(
        node_type="RepeatLatentBatch", display_name="Repeat Latent Batch", category="latent/batch",
        inputs=[_latent_in(), IntInput(name="amount", default=1, min=1, max=64)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples: Latent, amount: int) -> tuple[Latent]:
        x = samples["samples"]
        out = dict(samples)
        out["samples"] = x.repeat(amount, 1, 1, 1)
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            mask = repeat_to_batch(mask, x.shape[0])
            out["noise_mask"] = mask.repeat(amount, *([1] * (mask.dim() - 1)))
        indices = samples.get("batch_index")
        if indices is not None:
            indices = list(indices)
            offset = max(indices) - min(indices) + 1  # copies draw fresh noise after the originals
            out["batch_index"] = indices + [i + k * offset for k in range(1, amount) for i in indices]
        return (out,)


class LatentComposite(Node):
    SCHEMA = NodeSchema(
        node_type="LatentComposite", display_name="Latent Composite", category="latent",
        description="Paste samples_from onto samples_to at pixel position (x, y), optionally feathering "
                    "the edges that lie inside samples_to.",
        inputs=[_latent_in("samples_to"), _latent_in("samples_from"),
                IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8),
                IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8),
                IntInput(name="feather", default=0, min=0, max=MAX_RESOLUTION, step=8)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples_to: Latent, samples_from: Latent, x: int, y: int,
                feather: int) -> tuple[Latent]:
        x, y, feather = x // LATENT_DOWNSCALE, y // LATENT_DOWNSCALE, feather // LATENT_DOWNSCALE
        dest = samples_to["samples"].clone()
        src = samples_from["samples"]
        if src.shape[1] != dest.shape[1]:
            raise ValueError(f"LatentComposite: samples_from has {src.shape[1]} channels but samples_to has "
                             f"{dest.shape[1]}; both must come from the same model family")
        if src.shape[0] not in (1, dest.shape[0]):
            src = repeat_to_batch(src, dest.shape[0])
        h, w = dest.shape[2], dest.shape[3]
        src = src[:, :, :max(0, h - y), :max(0, w - x)].to(dest.dtype)
        sh, sw = src.shape[2], src.shape[3]
        out = dict(samples_to)
        if sh == 0 or sw == 0:
            out["samples"] = dest
            return (out,)
        region = dest[:, :, y:y + sh, x:x + sw]
        if feather == 0:
            dest[:, :, y:y + sh, x:x + sw] = src
        else:
            mask = _feather_mask(sh, sw, feather, top=y != 0, bottom=y + sh < h, left=x != 0, right=x + sw < w)
            dest[:, :, y:y + sh, x:x + sw] = src * mask + region * (1 - mask)
        out["samples"] = dest
        return (out,)


def _feather_mask(h: int, w: int, feather: int, *, top: bool, bottom: bool, left: bool, right: bool) -> torch.Tensor:
    """[1, 1, h, w] weights ramping up over `feather` latents from each edge that borders the destination."""
    ramp = torch.arange(1, feather + 1, dtype=torch.float32) / feather
    rows, cols = torch.ones(h), torch.ones(w)
    n_h, n_w = min(feather, h), min(feather, w)
    if top:
        rows[:n_h] *= ramp[:n_h]
    if bottom:
        rows[h - n_h:] *= ramp[:n_h].flip(0)
    if left:
        cols[:n_w] *= ramp[:n_w]
    if right:
        cols[w - n_w:] *= ramp[:n_w].flip(0)
    return (rows[:, None] * cols[None, :])[None, None]


class SetLatentNoiseMask(Node):
    SCHEMA = NodeSchema(
        node_type="SetLatentNoiseMask", display_name="Set Latent Noise Mask", category="latent/inpaint",
        description="Only the masked area (1) is regenerated by the sampler; the rest keeps the input latent.",
        inputs=[_latent_in(), InputSpec(name="mask", type="MASK")],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        return (out,)


def _match_spatial(x: torch.Tensor, like: torch.Tensor, method: str = "bilinear") -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return resize_nchw(x, like.shape[-1], like.shape[-2], method, "center")


class LatentBlend(Node):
    SCHEMA = NodeSchema(
        node_type="LatentBlend", display_name="Latent Blend", category="_for_testing",
        description="samples1 x blend_factor + samples2 x (1 - blend_factor); samples2 is resized (bicubic, "
                    "center crop) to match.",
        inputs=[_latent_in("samples1"), _latent_in("samples2"),
                FloatInput(name="blend_factor", default=0.5, min=0.0, max=1.0, step=0.01)],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        a = samples1["samples"]
        b = _match_spatial(samples2["samples"], a, "bicubic").to(a.dtype)
        if b.shape[0] not in (1, a.shape[0]):
            b = repeat_to_batch(b, a.shape[0])
        out = dict(samples1)
        out["samples"] = a * blend_factor + b * (1 - blend_factor)
        return (out,)


class LatentBatch(Node):
    SCHEMA = NodeSchema(
        node_type="LatentBatch", display_name="Latent Batch", category="latent/batch",
        description="Join two batches (samples2 resized to samples1's size); batch indices are kept.",
        inputs=[_latent_in("samples1"), _latent_in("samples2")],
        outputs=_latent_out(),
    )

    def execute(self, ctx, *, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        a = samples1["samples"]
        b = _match_spatial(samples2["samples"], a).to(a.dtype)
        out: Latent = {"samples": torch.cat([a, b])}
        out["batch_index"] = (list(samples1.get("batch_index", range(a.shape[0])))
                              + list(samples2.get("batch_index", range(b.shape[0]))))
        if "noise_mask" in samples1 or "noise_mask" in samples2:
            size = (a.shape[-2] * LATENT_DOWNSCALE, a.shape[-1] * LATENT_DOWNSCALE)
            parts = []
            for part, n in ((samples1, a.shape[0]), (samples2, b.shape[0])):
                mask = part.get("noise_mask")
                mask = torch.ones(1, 1, *size) if mask is None else mask.reshape(-1, 1, *mask.shape[-2:]).float()
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
                parts.append(repeat_to_batch(mask, n))
            out["noise_mask"] = torch.cat(parts)
        return (out,)


NODES = [EmptyLatentImage, LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch, LatentComposite,
         SetLatentNoiseMask, LatentBlend, LatentBatch]
