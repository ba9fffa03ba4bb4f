"""Image filters: blend, blur, sharpen, quantize, and scaling to a pixel count.

The formulas are ComfyUI's, so a workflow gives the same pixels: blend modes mix `image1` with
`mode(image1, image2)` by `blend_factor`; blur and sharpen convolve with a Gaussian sampled on
[-1, 1] (so `sigma` is relative to the kernel's width, not in pixels) over a reflected border.
Outputs stay on the input's device and dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import Limits
from nodes.sd.image import IMAGE_UPSCALE_METHODS
from nodes.sd.image_transform import scale_image

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHER_METHODS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


# ------------------------------------------------------------------------------------------- helpers

def check_image(node: str, name: str, image: Any) -> torch.Tensor:
    """The IMAGE `image` as [B, H, W, C], or an error naming the node and input."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{node}, input '{name}': expected an IMAGE tensor, got {type(image).__name__}")
    if image.dim() != 4 or min(image.shape[:3]) == 0:
        raise ValueError(f"{node}, input '{name}': an IMAGE must be [batch, height, width, channels] with no empty "
                         f"side, got shape {list(image.shape)}")
    return image


def check_output_pixels(ctx: Any, node: str, batch: int, height: int, width: int) -> None:
    """Refuse results larger than the server's pixel budget before allocating them."""
    limits = getattr(ctx, "limits", None) or Limits()
    pixels = batch * height * width
    if pixels > limits.max_pixels:
        raise ValueError(f"{node}: the result would be {width}x{height} x batch {batch} = {pixels:,} pixels, more "
                         f"than the limit of {limits.max_pixels:,}")


def match_channels(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Give `other` the channel count of `reference`: drop extra channels or add an opaque alpha."""
    c = reference.shape[-1]
    if other.shape[-1] > c:
        return other[..., :c]
    if other.shape[-1] < c:
        pad = torch.ones(*other.shape[:-1], c - other.shape[-1], dtype=other.dtype, device=other.device)
        return torch.cat([other, pad], dim=-1)
    return other


def gaussian_kernel(size: int, sigma: float, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[size, size] weights exp(-d^2 / 2 sigma^2), d measured on a [-1, 1] grid, summing to 1."""
    axis = torch.linspace(-1.0, 1.0, size, device=device, dtype=torch.float32)
    d2 = axis[:, None] ** 2 + axis[None, :] ** 2
    g = torch.exp(-d2 / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def convolve_reflect(node: str, name: str, image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Convolve every channel of [B, H, W, C] with `kernel` ([k, k]) over a mirrored border."""
    _, h, w, c = image.shape
    if radius >= h or radius >= w:
        raise ValueError(f"{node}, input '{name}': a radius of {radius} needs an image larger than {radius} pixels "
                         f"on each side, got {w}x{h}")
    x = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), mode="reflect")
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c).movedim(1, -1)


def _soft_light(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a.clamp_min(0)))
    return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))


def blend_layers(mode: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The blend of top layer `b` over base `a` (before mixing by blend_factor)."""
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        return _soft_light(a, b)
    if mode == "difference":
        return a - b  # ComfyUI's "difference" is signed; the final clamp keeps what is above 0
    raise ValueError(f"ImageBlend, input 'blend_mode': unknown mode {mode!r}; expected one of {list(BLEND_MODES)}")


def _schema(node_type: str, display: str, category: str, inputs: list[InputSpec], description: str = "",
            outputs: list[OutputSpec] | None = None) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, description=description,
                      inputs=inputs, outputs=outputs or [OutputSpec(type="IMAGE")],
                      python_module="nodes.sd.image_ops")


# --------------------------------------------------------------------------------------------- nodes

class ImageBlend(Node):
    SCHEMA = _schema(
        "ImageBlend", "Blend Images", "image/postprocessing",
        [InputSpec(name="image1", type="IMAGE"), InputSpec(name="image2", type="IMAGE"),
         FloatInput(name="blend_factor", default=0.5, min=0.0, max=1.0, step=0.01),
         ComboInput(name="blend_mode", choices=BLEND_MODES)],
        "image1 x (1 - blend_factor) + mode(image1, image2) x blend_factor, clamped to 0..1; image2 is resized "
        "(bicubic, centre crop) to image1's size.")

    def execute(self, ctx, *, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float,
                blend_mode: str) -> tuple[torch.Tensor]:
        a = check_image("ImageBlend", "image1", image1)
        b = match_channels(a, check_image("ImageBlend", "image2", image2)).to(device=a.device, dtype=a.dtype)
        if b.shape[1:3] != a.shape[1:3]:
            b = scale_image(b, a.shape[2], a.shape[1], "bicubic", "center")
        if b.shape[0] not in (1, a.shape[0]) and a.shape[0] != 1:
            raise ValueError(f"ImageBlend, input 'image2': a batch of {b.shape[0]} cannot be blended with a batch of "
                             f"{a.shape[0]} (image1); use batches of the same size or of one image")
        out = (a * (1 - blend_factor) + blend_layers(blend_mode, a, b) * blend_factor).clamp(0, 1)
        if a.shape[-1] == 4:  # the alpha channel is transparency, not colour: image1's is kept
            out[..., 3] = a[..., 3]
        return (out,)


class ImageBlur(Node):
    SCHEMA = _schema(
        "ImageBlur", "Blur Image", "image/postprocessing",
        [InputSpec(name="image", type="IMAGE"), IntInput(name="blur_radius", default=1, min=1, max=31, step=1),
         FloatInput(name="sigma", default=1.0, min=0.1, max=10.0, step=0.1)])

    def execute(self, ctx, *, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        image = check_image("ImageBlur", "image", image)
        kernel = gaussian_kernel(2 * blur_radius + 1, sigma, device=image.device, dtype=image.dtype)
        return (convolve_reflect("ImageBlur", "blur_radius", image, kernel, blur_radius),)


class ImageSharpen(Node):
    SCHEMA = _schema(
        "ImageSharpen", "Sharpen Image", "image/postprocessing",
        [InputSpec(name="image", type="IMAGE"), IntInput(name="sharpen_radius", default=1, min=1, max=31, step=1),
         FloatInput(name="sigma", default=1.0, min=0.1, max=10.0, step=0.01),
         FloatInput(name="alpha", default=1.0, min=0.0, max=5.0, step=0.01)],
        "Unsharp masking: the Gaussian scaled by -10 alpha, with the centre weight raised so the kernel sums to 1.")

    def execute(self, ctx, *, image: torch.Tensor, sharpen_radius: int, sigma: float,
                alpha: float) -> tuple[torch.Tensor]:
        image = check_image("ImageSharpen", "image", image)
        kernel = gaussian_kernel(2 * sharpen_radius + 1, sigma, device=image.device, dtype=torch.float32)
        kernel = kernel * -(alpha * 10)
        kernel[sharpen_radius, sharpen_radius] += 1.0 - kernel.sum()
        out = convolve_reflect("ImageSharpen", "sharpen_radius", image, kernel.to(image.dtype), sharpen_radius)
        return (out.clamp(0, 1),)


def bayer_matrix(order: int) -> np.ndarray:
    """The [order, order] ordered-dither thresholds, centred on 0 in [-0.5, 0.5)."""
    index = np.zeros((1, 1), dtype=np.int64)
    while index.shape[0] < order:
        index = np.block([[4 * index, 4 * index + 2], [4 * index + 3, 4 * index + 1]])
    return (index.astype(np.float64) + 0.5) / (order * order) - 0.5


def quantize_rgb(rgb: np.ndarray, colors: int, dither: str) -> np.ndarray:
    """uint8 [H, W, 3] reduced to a median-cut palette of at most `colors` colours of the image."""
    im = Image.fromarray(rgb)
    palette = im.quantize(colors=colors)  # the palette is chosen once, then applied with the dither wanted
    if dither == "none":
        out = im.quantize(palette=palette, dither=Image.Dither.NONE)
    elif dither == "floyd-steinberg":
        out = im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    elif dither.startswith("bayer-"):
        order = int(dither.removeprefix("bayer-"))
        spread = 2 * 256 / (len(palette.getpalette()) // 3)
        h, w = rgb.shape[:2]
        thresholds = np.tile(spread * bayer_matrix(order) + 0.5, (math.ceil(h / order), math.ceil(w / order)))
        shifted = np.clip(rgb.astype(np.float64) + thresholds[:h, :w, None], 0, 255).astype(np.uint8)
        out = Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)
    else:
        raise ValueError(f"ImageQuantize, input 'dither': unknown method {dither!r}; expected one of "
                         f"{list(DITHER_METHODS)}")
    return np.asarray(out.convert("RGB"))


class ImageQuantize(Node):
    SCHEMA = _schema(
        "ImageQuantize", "Quantize Image", "image/postprocessing",
        [InputSpec(name="image", type="IMAGE"), IntInput(name="colors", default=256, min=1, max=256, step=1),
         ComboInput(name="dither", choices=DITHER_METHODS)],
        "Reduce each image to a palette of at most `colors` colours (median cut), optionally dithered.")

    def execute(self, ctx, *, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        image = check_image("ImageQuantize", "image", image)
        if image.shape[-1] < 3:
            raise ValueError(f"ImageQuantize, input 'image': needs RGB images, got {image.shape[-1]} channel(s)")
        rgb = (image[..., :3].detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).numpy()
        out = torch.empty(rgb.shape, dtype=torch.float32)
        for b in range(rgb.shape[0]):
            if ctx is not None:
                ctx.progress(b, rgb.shape[0])
            out[b] = torch.from_numpy(quantize_rgb(rgb[b], colors, dither).astype(np.float32) / 255.0)
        out = out.to(device=image.device, dtype=image.dtype)
        if image.shape[-1] == 4:
            out = torch.cat([out, image[..., 3:]], dim=-1)
        return (out,)


class ImageScaleToTotalPixels(Node):
    SCHEMA = _schema(
        "ImageScaleToTotalPixels", "Scale Image to Total Pixels", "image/upscaling",
        [InputSpec(name="image", type="IMAGE"), ComboInput(name="upscale_method", choices=IMAGE_UPSCALE_METHODS),
         FloatInput(name="megapixels", default=1.0, min=0.01, max=16.0, step=0.01),
         IntInput(name="resolution_steps", default=1, min=1, max=256)],
        "Resize to about megapixels x 1024 x 1024 pixels, keeping the aspect ratio; each side is rounded to a "
        "multiple of resolution_steps.")

    def execute(self, ctx, *, image: torch.Tensor, upscale_method: str, megapixels: float,
                resolution_steps: int) -> tuple[torch.Tensor]:
        image = check_image("ImageScaleToTotalPixels", "image", image)
        b, h, w, _ = image.shape
        scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        width = max(1, round(w * scale / resolution_steps)) * resolution_steps
        height = max(1, round(h * scale / resolution_steps)) * resolution_steps
        check_output_pixels(ctx, "ImageScaleToTotalPixels", b, height, width)
        return (scale_image(image, width, height, upscale_method),)


NODES = [ImageBlend, ImageBlur, ImageSharpen, ImageQuantize, ImageScaleToTotalPixels]
