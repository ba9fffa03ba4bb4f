"""Arranging images: crop, batch, repeat, pick from a batch, stitch side by side, read the size.

Batches of different sizes and shapes are reconciled the way ComfyUI does it (the second image is
resized to the first; a missing alpha channel is added as opaque), so workflows give the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graph import BooleanInput, ComboInput, HiddenInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION
from nodes.sd.image_ops import check_image, check_output_pixels
from nodes.sd.image_transform import scale_image

STITCH_DIRECTIONS = ("right", "down", "left", "up")
SPACING_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _schema(node_type: str, display: str, category: str, inputs: list, description: str = "",
            outputs: list[OutputSpec] | None = None, hidden: list[HiddenInput] | None = None) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, description=description,
                      inputs=inputs, outputs=outputs or [OutputSpec(type="IMAGE")], hidden=hidden or [],
                      python_module="nodes.sd.image_layout")


def pad_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Add opaque (1.0) channels up to `channels`: an RGB image joins RGBA ones as fully opaque."""
    missing = channels - image.shape[-1]
    if missing <= 0:
        return image
    return F.pad(image, (0, missing), mode="constant", value=1.0)


def extend_batch(image: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat the last image until the batch has `batch` items."""
    if image.shape[0] >= batch:
        return image
    return torch.cat([image, image[-1:].expand(batch - image.shape[0], -1, -1, -1)])


class ImageCrop(Node):
    SCHEMA = _schema(
        "ImageCrop", "Crop Image", "image/transform",
        [InputSpec(name="image", type="IMAGE"),
         IntInput(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1),
         IntInput(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1),
         IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=1),
         IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=1)],
        "The width x height region at (x, y), cut at the image's edges; x and y past the edge take the last pixel.")

    def execute(self, ctx, *, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        image = check_image("ImageCrop", "image", image)
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageBatch(Node):
    SCHEMA = _schema(
        "ImageBatch", "Batch Images", "image",
        [InputSpec(name="image1", type="IMAGE"), InputSpec(name="image2", type="IMAGE")],
        "Join two batches; image2 is resized (bilinear, centre crop) to image1's size.")

    def execute(self, ctx, *, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        a = check_image("ImageBatch", "image1", image1)
        b = check_image("ImageBatch", "image2", image2).to(device=a.device, dtype=a.dtype)
        channels = max(a.shape[-1], b.shape[-1])
        a, b = pad_channels(a, channels), pad_channels(b, channels)
        if b.shape[1:] != a.shape[1:]:
            b = scale_image(b, a.shape[2], a.shape[1], "bilinear", "center")
        return (torch.cat([a, b]),)


class RepeatImageBatch(Node):
    SCHEMA = _schema(
        "RepeatImageBatch", "Repeat Image Batch", "image/batch",
        [InputSpec(name="image", type="IMAGE"), IntInput(name="amount", default=1, min=1, max=4096)])

    def execute(self, ctx, *, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        image = check_image("RepeatImageBatch", "image", image)
        check_output_pixels(ctx, "RepeatImageBatch", image.shape[0] * amount, image.shape[1], image.shape[2])
        return (image.repeat(amount, 1, 1, 1),)


class ImageFromBatch(Node):
    SCHEMA = _schema(
        "ImageFromBatch", "Get Image from Batch", "image/batch",
        [InputSpec(name="image", type="IMAGE"),
         IntInput(name="batch_index", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
         IntInput(name="length", default=1, min=1, max=4096)],
        "`length` images from batch_index on (negative indices count from the end), within the batch.")

    def execute(self, ctx, *, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        image = check_image("ImageFromBatch", "image", image)
        total = image.shape[0]
        if batch_index < 0:
            batch_index += total
        start = max(0, min(total - 1, batch_index))
        length = min(total - start, length)
        return (image[start:start + length].clone(),)


def _center_pad(image: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """Pad dimension `dim` (1 = height, 2 = width) of [B, H, W, C] symmetrically up to `size`."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, before, after) if dim == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


class ImageStitch(Node):
    SCHEMA = _schema(
        "ImageStitch", "Stitch Images", "image/transform",
        [InputSpec(name="image1", type="IMAGE"),
         ComboInput(name="direction", choices=STITCH_DIRECTIONS, default="right"),
         BooleanInput(name="match_image_size", default=True),
         IntInput(name="spacing_width", default=0, min=0, max=1024, step=2),
         ComboInput(name="spacing_color", choices=tuple(SPACING_COLORS), default="white"),
         InputSpec(name="image2", type="IMAGE", optional=True)],
        "Stitches image2 to image1 in the specified direction.\nIf image2 is not provided, returns image1 "
        "unchanged.\nOptional spacing can be added between images.")

    def execute(self, ctx, *, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
                spacing_color: str, image2: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        a = check_image("ImageStitch", "image1", image1)
        if image2 is None:
            return (a,)
        b = check_image("ImageStitch", "image2", image2).to(device=a.device, dtype=a.dtype)
        horizontal = direction in ("left", "right")
        batch = max(a.shape[0], b.shape[0])
        a, b = extend_batch(a, batch), extend_batch(b, batch)
        color = SPACING_COLORS[spacing_color]
        if match_image_size:
            h1, w1 = a.shape[1:3]
            aspect = b.shape[2] / b.shape[1]
            if horizontal:
                size = (max(1, int(h1 * aspect)), h1)
            else:
                size = (w1, max(1, int(w1 / aspect)))
            b = scale_image(b, size[0], size[1], "lanczos")
        else:
            # Grey spacing colours pad with their value; coloured ones pad with black, as ComfyUI does.
            fill = color[0] if len(set(color)) == 1 else 0.0
            dim = 1 if horizontal else 2
            size = max(a.shape[dim], b.shape[dim])
            a, b = _center_pad(a, dim, size, fill), _center_pad(b, dim, size, fill)
        channels = max(a.shape[-1], b.shape[-1])
        a, b = pad_channels(a, channels), pad_channels(b, channels)
        parts = [b, a] if direction in ("left", "up") else [a, b]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            shape = ((batch, a.shape[1], spacing_width, channels) if horizontal
                     else (batch, spacing_width, a.shape[2], channels))
            spacer = torch.zeros(shape, dtype=a.dtype, device=a.device)
            for i, value in enumerate(color[:channels]):
                spacer[..., i] = value
            if channels == 4:
                spacer[..., 3] = 1.0
            parts.insert(1, spacer)
        axis = 2 if horizontal else 1
        out_h = a.shape[1] if horizontal else sum(p.shape[1] for p in parts)
        out_w = sum(p.shape[2] for p in parts) if horizontal else a.shape[2]
        check_output_pixels(ctx, "ImageStitch", batch, out_h, out_w)
        return (torch.cat(parts, dim=axis),)


class GetImageSize(Node):
    SCHEMA = _schema(
        "GetImageSize", "Get Image Size", "image",
        [InputSpec(name="image", type="IMAGE")],
        "Returns the width, height, and batch size of the image.",
        outputs=[OutputSpec(type="INT", name="width"), OutputSpec(type="INT", name="height"),
                 OutputSpec(type="INT", name="batch_size")],
        hidden=[HiddenInput(name="unique_id", kind="UNIQUE_ID")])

    def execute(self, ctx, *, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        image = check_image("GetImageSize", "image", image)
        return int(image.shape[2]), int(image.shape[1]), int(image.shape[0])


NODES = [ImageCrop, ImageBatch, RepeatImageBatch, ImageFromBatch, ImageStitch, GetImageSize]
