"""Image transform nodes: resize (to a size or by a factor), invert, pad for outpainting, and a solid
colour image. IMAGE is [batch, height, width, channels], floats in 0..1."""

from __future__ import annotations

from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION, Limits
from nodes.base.resize import CROP_METHODS, resize_nchw
from nodes.sd.image import IMAGE_UPSCALE_METHODS
from nodes.sd.image_files import MAX_LOAD_PIXELS
from nodes.sd.latent import check_pixels


def _check_images(node: str, image: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"{node}: image must be [batch, height, width, channels], got shape {list(image.shape)}")


def scale_image(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize IMAGE [B, H, W, C] to width x height (channels-last in and out)."""
    return resize_nchw(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1).contiguous()


class ImageScale(Node):
    SCHEMA = NodeSchema(
        node_type="ImageScale", display_name="Upscale Image", category="image/upscaling",
        description="Resize to width x height; 0 for one side keeps the aspect ratio, 0 for both does nothing.",
        inputs=[InputSpec(name="image", type="IMAGE"), ComboInput(name="upscale_method", choices=IMAGE_UPSCALE_METHODS),
                IntInput(name="width", default=512, min=0, max=MAX_RESOLUTION, step=1),
                IntInput(name="height", default=512, min=0, max=MAX_RESOLUTION, step=1),
                ComboInput(name="crop", choices=CROP_METHODS)],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        _check_images("ImageScale", image)
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1], image.shape[2]
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    SCHEMA = NodeSchema(
        node_type="ImageScaleBy", display_name="Upscale Image By", category="image/upscaling",
        inputs=[InputSpec(name="image", type="IMAGE"), ComboInput(name="upscale_method", choices=IMAGE_UPSCALE_METHODS),
                FloatInput(name="scale_by", default=1.0, min=0.01, max=8.0, step=0.01)],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        _check_images("ImageScaleBy", image)
        width, height = max(1, round(image.shape[2] * scale_by)), max(1, round(image.shape[1] * scale_by))
        return (scale_image(image, width, height, upscale_method),)


class ImageInvert(Node):
    SCHEMA = NodeSchema(
        node_type="ImageInvert", display_name="Invert Image", category="image",
        inputs=[InputSpec(name="image", type="IMAGE")], outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


def outpaint_mask(h: int, w: int, *, top: int, bottom: int, left: int, right: int, feathering: int) -> torch.Tensor:
    """[H+top+bottom, W+left+right]: 1 on the new border, a squared ramp fading into the image edges."""
    mask = torch.ones(h + top + bottom, w + left + right)
    inner = torch.zeros(h, w)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        i = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        j = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        far_h, far_w = torch.full((h, w), float(h)), torch.full((h, w), float(w))
        d = torch.minimum(torch.minimum(i if top else far_h, h - i if bottom else far_h),
                          torch.minimum(j if left else far_w, w - j if right else far_w))
        v = (feathering - d) / feathering
        inner = torch.where(d < feathering, v * v, inner)
    mask[top:top + h, left:left + w] = inner
    return mask


class ImagePadForOutpaint(Node):
    SCHEMA = NodeSchema(
        node_type="ImagePadForOutpaint", display_name="Pad Image for Outpainting", category="image",
        description="Add grey borders and a mask covering them (feathered into the image) for outpainting.",
        inputs=[InputSpec(name="image", type="IMAGE"),
                *[IntInput(name=side, default=0, min=0, max=MAX_RESOLUTION, step=8)
                  for side in ("left", "top", "right", "bottom")],
                IntInput(name="feathering", default=40, min=0, max=MAX_RESOLUTION, step=1)],
        outputs=[OutputSpec(type="IMAGE"), OutputSpec(type="MASK")],
    )

    def execute(self, ctx, *, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images("ImagePadForOutpaint", image)
        b, h, w, c = image.shape
        pixels = (h + top + bottom) * (w + left + right) * b
        if pixels > MAX_LOAD_PIXELS:
            raise ValueError(f"ImagePadForOutpaint: the padded image would be {pixels:,} pixels, more than the limit "
                             f"of {MAX_LOAD_PIXELS:,}")
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        out[:, top:top + h, left:left + w, :] = image
        mask = outpaint_mask(h, w, top=top, bottom=bottom, left=left, right=right, feathering=feathering)
        return out, mask.unsqueeze(0)


class EmptyImage(Node):
    SCHEMA = NodeSchema(
        node_type="EmptyImage", display_name="EmptyImage", category="image",
        inputs=[IntInput(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1),
                IntInput(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1),
                IntInput(name="batch_size", default=1, min=1, max=4096),
                IntInput(name="color", default=0, min=0, max=0xFFFFFF, step=1, display="color")],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def validate_inputs(self, *, limits: Limits, width: Any = None, height: Any = None, batch_size: Any = None,
                        **_: Any) -> str | bool:
        return check_pixels("EmptyImage", width, height, batch_size, limits)

    def execute(self, ctx, *, width: int, height: int, batch_size: int, color: int) -> tuple[torch.Tensor]:
        rgb = torch.tensor([((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF])
        return (rgb.expand(batch_size, height, width, 3).clone(),)


NODES = [ImageScale, ImageScaleBy, ImageInvert, ImagePadForOutpaint, EmptyImage]
