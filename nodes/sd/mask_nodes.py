"""Mask nodes and masked compositing: convert, create, invert, crop, feather, grow, threshold, combine.

A MASK is float32 [B, H, W] with 1 = masked (a bare [H, W] is accepted everywhere and treated as a
batch of one). An image's alpha is the opposite of a mask: JoinImageWithAlpha writes 1 - mask as
alpha and SplitImageWithAlpha returns 1 - alpha, as ComfyUI does (LoadImage's mask is 1 - alpha too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graph import BooleanInput, ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION, Limits
from nodes.base.resize import repeat_to_batch
from nodes.sd.image_ops import check_image, match_channels
from nodes.sd.latent import check_pixels

MASK_CHANNELS = ("red", "green", "blue", "alpha")
MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


# ------------------------------------------------------------------------------------------- helpers

def as_mask(node: str, name: str, mask: Any) -> torch.Tensor:
    """The MASK `mask` as [B, H, W] (from [H, W], [B, H, W] or [B, 1, H, W]), or an error naming the input."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{node}, input '{name}': expected a MASK tensor, got {type(mask).__name__}")
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() not in (2, 3) or mask.numel() == 0:
        raise ValueError(f"{node}, input '{name}': a MASK must be [batch, height, width] or [height, width] with "
                         f"no empty side, got shape {list(mask.shape)}")
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H, W] -> [B, height, width], bilinear (unchanged when already that size)."""
    if mask.shape[-2:] == (height, width):
        return mask
    return F.interpolate(mask[:, None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[:, 0].to(mask.dtype)


def paste_masked(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
                 *, multiplier: int = 1, resize_source: bool = False) -> torch.Tensor:
    """source x mask + destination x (1 - mask) where source lands at (x, y); [B, C, H, W] in and out.

    Positions are in units of `multiplier` destination pixels (8 for latents given in pixels). The
    source is tiled or cut to the destination's batch, the mask resized (bilinear) to the source's
    size; what falls outside the destination is dropped. The destination itself is not modified.
    """
    out = destination.clone()
    source = source.to(device=out.device, dtype=out.dtype)
    if resize_source:
        source = F.interpolate(source, size=out.shape[-2:], mode="bilinear", align_corners=False)
    source = repeat_to_batch(source, out.shape[0])
    (dh, dw), (sh, sw) = out.shape[-2:], source.shape[-2:]
    left = max(-sw * multiplier, min(x, dw * multiplier)) // multiplier
    top = max(-sh * multiplier, min(y, dh * multiplier)) // multiplier
    if mask is None:
        weight = torch.ones(out.shape[0], 1, sh, sw, dtype=out.dtype, device=out.device)
    else:
        mask = mask.reshape(-1, *mask.shape[-2:])  # a bare [H, W] mask is one mask
        weight = resize_mask(mask.to(device=out.device, dtype=out.dtype), sh, sw)[:, None]
        weight = repeat_to_batch(weight, out.shape[0])
    y0, y1, x0, x1 = max(top, 0), min(top + sh, dh), max(left, 0), min(left + sw, dw)
    if y0 >= y1 or x0 >= x1:
        return out
    src_rows, src_cols = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    w = weight[..., src_rows, src_cols]
    region = out[..., y0:y1, x0:x1]
    out[..., y0:y1, x0:x1] = source[..., src_rows, src_cols] * w + region * (1 - w)
    return out


def _schema(node_type: str, display: str, category: str, inputs: list, outputs: list[OutputSpec],
            description: str = "") -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, description=description,
                      inputs=inputs, outputs=outputs, python_module="nodes.sd.mask_nodes")


def _mask_in(name: str = "mask") -> InputSpec:
    return InputSpec(name=name, type="MASK")


def _xy() -> list[IntInput]:
    return [IntInput(name=n, default=0, min=0, max=MAX_RESOLUTION, step=1) for n in ("x", "y")]


_IMAGE_OUT = [OutputSpec(type="IMAGE")]
_MASK_OUT = [OutputSpec(type="MASK")]


# ------------------------------------------------------------------------------------------ compositing

class ImageCompositeMasked(Node):
    SCHEMA = _schema(
        "ImageCompositeMasked", "Image Composite Masked", "image",
        [InputSpec(name="destination", type="IMAGE"), InputSpec(name="source", type="IMAGE"), *_xy(),
         BooleanInput(name="resize_source", default=False), InputSpec(name="mask", type="MASK", optional=True)],
        _IMAGE_OUT, "Paste source onto destination at (x, y), weighted by mask (resized to the source).")

    def execute(self, ctx, *, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        dest = check_image("ImageCompositeMasked", "destination", destination)
        src = match_channels(dest, check_image("ImageCompositeMasked", "source", source))
        if mask is not None:
            mask = as_mask("ImageCompositeMasked", "mask", mask)
        out = paste_masked(dest.movedim(-1, 1), src.movedim(-1, 1), x, y, mask, resize_source=resize_source)
        return (out.movedim(1, -1),)


class JoinImageWithAlpha(Node):
    SCHEMA = _schema(
        "JoinImageWithAlpha", "Join Image with Alpha", "mask/compositing",
        [InputSpec(name="image", type="IMAGE"), InputSpec(name="alpha", type="MASK")], _IMAGE_OUT,
        "RGBA from an image and a mask: alpha = 1 - mask, the mask resized to the image.")

    def execute(self, ctx, *, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        image = check_image("JoinImageWithAlpha", "image", image)
        mask = as_mask("JoinImageWithAlpha", "alpha", alpha).to(device=image.device, dtype=image.dtype)
        batch = max(image.shape[0], mask.shape[0])
        image, mask = repeat_to_batch(image, batch), repeat_to_batch(mask, batch)
        opacity = 1.0 - resize_mask(mask, image.shape[1], image.shape[2])
        return (torch.cat([image[..., :3], opacity[..., None]], dim=-1),)


class SplitImageWithAlpha(Node):
    SCHEMA = _schema(
        "SplitImageWithAlpha", "Split Image with Alpha", "mask/compositing",
        [InputSpec(name="image", type="IMAGE")], [OutputSpec(type="IMAGE"), OutputSpec(type="MASK")],
        "RGB and mask = 1 - alpha (an image without alpha gives an all-zero mask).")

    def execute(self, ctx, *, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = check_image("SplitImageWithAlpha", "image", image)
        opacity = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3].clone(), 1.0 - opacity


# ------------------------------------------------------------------------------------ conversions

class MaskToImage(Node):
    SCHEMA = _schema("MaskToImage", "Convert Mask to Image", "mask", [_mask_in()], _IMAGE_OUT,
                     "A grey image whose three channels are the mask.")

    def execute(self, ctx, *, mask: torch.Tensor) -> tuple[torch.Tensor]:
        mask = as_mask("MaskToImage", "mask", mask)
        return (mask[..., None].expand(-1, -1, -1, 3).contiguous(),)


class ImageToMask(Node):
    SCHEMA = _schema("ImageToMask", "Convert Image to Mask", "mask",
                     [InputSpec(name="image", type="IMAGE"), ComboInput(name="channel", choices=MASK_CHANNELS)],
                     _MASK_OUT, "One channel of the image, as it is (alpha is not inverted).")

    def execute(self, ctx, *, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        image = check_image("ImageToMask", "image", image)
        index = MASK_CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"ImageToMask, input 'channel': the image has no {channel} channel (it has "
                             f"{image.shape[-1]} channels); use JoinImageWithAlpha or LoadImage's mask for alpha")
        return (image[..., index].clone(),)


class SolidMask(Node):
    SCHEMA = _schema("SolidMask", "Create Solid Mask", "mask",
                     [FloatInput(name="value", default=1.0, min=0.0, max=1.0, step=0.01),
                      IntInput(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1),
                      IntInput(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1)], _MASK_OUT)

    def validate_inputs(self, *, limits: Limits, width: Any = None, height: Any = None, **_: Any) -> str | bool:
        return check_pixels("SolidMask", width, height, 1, limits)

    def execute(self, ctx, *, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    SCHEMA = _schema("InvertMask", "Invert Mask", "mask", [_mask_in()], _MASK_OUT)

    def execute(self, ctx, *, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - as_mask("InvertMask", "mask", mask),)


class CropMask(Node):
    SCHEMA = _schema("CropMask", "Crop Mask", "mask",
                     [_mask_in(), *_xy(), IntInput(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1),
                      IntInput(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1)], _MASK_OUT,
                     "The width x height region at (x, y), cut at the mask's edges.")

    def execute(self, ctx, *, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple[torch.Tensor]:
        mask = as_mask("CropMask", "mask", mask)
        h, w = mask.shape[-2:]
        if x >= w or y >= h:
            name, value, size = ("x", x, w) if x >= w else ("y", y, h)
            raise ValueError(f"CropMask, input '{name}': {value} is outside the {w}x{h} mask, so nothing would be "
                             f"left (it must be below {size})")
        return (mask[:, y:y + height, x:x + width].clone(),)


# ------------------------------------------------------------------------------------------- editing

def _combine(operation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if operation == "multiply":
        return a * b
    if operation == "add":
        return a + b
    if operation == "subtract":
        return a - b
    if operation in ("and", "or", "xor"):  # on masks rounded to 0 / 1
        fn = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
        return fn(a.round().bool(), b.round().bool()).to(a.dtype)
    raise ValueError(f"MaskComposite, input 'operation': unknown operation {operation!r}; expected one of "
                     f"{list(MASK_OPERATIONS)}")


class MaskComposite(Node):
    SCHEMA = _schema("MaskComposite", "Combine Masks", "mask",
                     [_mask_in("destination"), _mask_in("source"), *_xy(),
                      ComboInput(name="operation", choices=MASK_OPERATIONS)], _MASK_OUT,
                     "Combine source into destination at (x, y); the result is clamped to 0..1.")

    def execute(self, ctx, *, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                operation: str) -> tuple[torch.Tensor]:
        dest = as_mask("MaskComposite", "destination", destination)
        src = as_mask("MaskComposite", "source", source).to(device=dest.device, dtype=dest.dtype)
        if src.shape[0] != dest.shape[0]:
            if dest.shape[0] == 1:
                dest = dest.expand(src.shape[0], -1, -1)
            elif src.shape[0] != 1:
                raise ValueError(f"MaskComposite, input 'source': a batch of {src.shape[0]} masks cannot be combined "
                                 f"with a batch of {dest.shape[0]} (destination); use the same batch size or one mask")
        out = dest.clone()
        h, w = out.shape[-2:]
        bottom, right = min(y + src.shape[-2], h), min(x + src.shape[-1], w)
        if bottom > y and right > x:
            region = out[:, y:bottom, x:right]
            out[:, y:bottom, x:right] = _combine(operation, region, src[:, :bottom - y, :right - x])
        return (out.clamp(0.0, 1.0),)


def edge_ramp(size: int, near: int, far: int) -> torch.Tensor:
    """[size] weights: (i + 1) / near over the first `near` entries, mirrored over the last `far`."""
    weights = torch.ones(size)
    near, far = min(near, size), min(far, size)
    if near:
        weights[:near] *= torch.arange(1, near + 1) / near
    if far:
        weights[size - far:] *= (torch.arange(1, far + 1) / far).flip(0)
    return weights


class FeatherMask(Node):
    SCHEMA = _schema("FeatherMask", "Feather Mask", "mask",
                     [_mask_in(), *[IntInput(name=side, default=0, min=0, max=MAX_RESOLUTION, step=1)
                                    for side in ("left", "top", "right", "bottom")]], _MASK_OUT,
                     "Fade the mask linearly to its edges over the given number of pixels per side.")

    def execute(self, ctx, *, mask: torch.Tensor, left: int, top: int, right: int,
                bottom: int) -> tuple[torch.Tensor]:
        mask = as_mask("FeatherMask", "mask", mask)
        h, w = mask.shape[-2:]
        rows = edge_ramp(h, top, bottom).to(device=mask.device, dtype=mask.dtype)
        cols = edge_ramp(w, left, right).to(device=mask.device, dtype=mask.dtype)
        return (mask * rows[:, None] * cols[None, :],)


def _dilate_once(m: torch.Tensor, tapered: bool) -> torch.Tensor:
    """Grey dilation of [B, 1, H, W] by a 3x3 square, or by a plus sign when `tapered`."""
    if not tapered:
        return F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
    p = F.pad(m, (1, 1, 1, 1), value=float("-inf"))
    shifts = (p[..., 1:-1, 1:-1], p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:])
    return torch.stack(shifts).amax(dim=0)


def grow_mask(mask: torch.Tensor, expand: int, tapered: bool, check: Any = None) -> torch.Tensor:
    """Dilate (expand > 0) or erode (expand < 0) [B, H, W] |expand| times by the 3x3 kernel."""
    h, w = mask.shape[-2:]
    steps = min(abs(expand), h + w)  # beyond h + w steps every pixel already sees the whole mask
    sign = 1.0 if expand > 0 else -1.0
    m = sign * mask[:, None].float()
    for _ in range(steps):
        if check is not None:
            check()
        m = _dilate_once(m, tapered)
    return (sign * m)[:, 0].to(mask.dtype)


class GrowMask(Node):
    SCHEMA = _schema("GrowMask", "Grow Mask", "mask",
                     [_mask_in(), IntInput(name="expand", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
                      BooleanInput(name="tapered_corners", default=True)], _MASK_OUT,
                     "Grow (or, negative, shrink) the mask by `expand` pixels; tapered corners grow a diamond.")

    def execute(self, ctx, *, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        mask = as_mask("GrowMask", "mask", mask)
        return (grow_mask(mask, expand, tapered_corners, ctx.check_interrupt if ctx is not None else None),)


class ThresholdMask(Node):
    SCHEMA = _schema("ThresholdMask", "Threshold Mask", "mask",
                     [_mask_in(), FloatInput(name="value", default=0.5, min=0.0, max=1.0, step=0.01)], _MASK_OUT,
                     "1 where the mask is above value, else 0.")

    def execute(self, ctx, *, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((as_mask("ThresholdMask", "mask", mask) > value).float(),)


NODES = [ImageCompositeMasked, JoinImageWithAlpha, SplitImageWithAlpha, MaskToImage, ImageToMask, SolidMask,
         InvertMask, CropMask, MaskComposite, FeatherMask, GrowMask, ThresholdMask]
