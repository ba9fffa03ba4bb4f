"""Image helpers of the IP-Adapter workflows: PrepImageForClipVision and IPAdapterNoise.

PrepImageForClipVision crops (or pads) to a square at the chosen side, resizes to 224 with PIL's
filters and optionally applies contrast-adaptive sharpening. IPAdapterNoise makes the noisy negative
image the pack uses instead of a black one; its randomness is seeded from the image, so the same input
gives the same noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec

from .clip_vision_nodes import check_image

SIZE = 224
INTERPOLATIONS = ("LANCZOS", "BICUBIC", "HAMMING", "BILINEAR", "BOX", "NEAREST")


def _schema(node_type: str, display: str, inputs: list[Any]) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category="ipadapter/utils", inputs=inputs,
                      outputs=[OutputSpec(type="IMAGE", name="IMAGE")], python_module="nodes.sd.ipadapter_image_nodes")


def contrast_adaptive_sharpening(image: torch.Tensor, amount: float) -> torch.Tensor:
    """AMD's CAS on [B, C, H, W] in 0..1: a 3x3 sharpening whose strength adapts to local contrast."""
    img = F.pad(image, (1, 1, 1, 1))
    a, b, c = img[..., :-2, :-2], img[..., :-2, 1:-1], img[..., :-2, 2:]
    d, e, f = img[..., 1:-1, :-2], img[..., 1:-1, 1:-1], img[..., 1:-1, 2:]
    g, h, i = img[..., 2:, :-2], img[..., 2:, 1:-1], img[..., 2:, 2:]
    cross = torch.stack((b, d, e, f, h))
    diag = torch.stack((a, c, g, i))
    mn = cross.min(dim=0).values + diag.min(dim=0).values
    mx = cross.max(dim=0).values + diag.max(dim=0).values
    amp = torch.sqrt(torch.reciprocal(mx) * torch.minimum(mn, 2 - mx))
    w = -amp * (amount * (1 / 5 - 1 / 8) + 1 / 8)
    out = ((b + d + f + h) * w + e) * torch.reciprocal(1 + 4 * w)
    return torch.nan_to_num(out).clamp(0, 1)


class PrepImageForClipVision(Node):
    SCHEMA = _schema("PrepImageForClipVision", "Prep Image For ClipVision",
                     [InputSpec(name="image", type="IMAGE"),
                      ComboInput(name="interpolation", choices=INTERPOLATIONS),
                      ComboInput(name="crop_position", choices=("top", "bottom", "left", "right", "center", "pad")),
                      FloatInput(name="sharpening", default=0.0, min=0.0, max=1.0, step=0.05)])

    def execute(self, ctx, *, image: torch.Tensor, interpolation: str = "LANCZOS", crop_position: str = "center",
                sharpening: float = 0.0) -> tuple[torch.Tensor]:
        image = check_image(image, "PrepImageForClipVision")[..., :3]
        _, oh, ow, _ = image.shape
        x = image.movedim(-1, 1).float()
        if crop_position == "pad":
            if oh > ow:
                p = (oh - ow) // 2
                x = F.pad(x, (p, p, 0, 0))
            elif ow > oh:
                p = (ow - oh) // 2
                x = F.pad(x, (0, 0, p, p))
        else:
            side = min(oh, ow)
            left, top = (ow - side) // 2, (oh - side) // 2
            top = 0 if "top" in crop_position else oh - side if "bottom" in crop_position else top
            left = 0 if "left" in crop_position else ow - side if "right" in crop_position else left
            x = x[:, :, top:top + side, left:left + side]
        filt = Image.Resampling[interpolation]
        out = []
        for item in x:
            pixels = (item.movedim(0, -1).clamp(0, 1) * 255).to(torch.uint8).numpy()
            resized = Image.fromarray(pixels).resize((SIZE, SIZE), resample=filt)
            out.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).movedim(-1, 0))
        result = torch.stack(out)
        if sharpening > 0:
            result = contrast_adaptive_sharpening(result, sharpening)
        return (result.movedim(1, -1),)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, size: int, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with reflected edges (torchvision's default sigma rule)."""
    sigma = sigma if sigma is not None else 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    k = _gaussian_kernel(size, sigma).to(x)
    c = x.shape[1]
    pad = size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


def elastic(x: torch.Tensor, alpha: float, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Elastic distortion: a random displacement field, smoothed by sigma, scaled by alpha / size."""
    _, _, h, w = x.shape
    disp = torch.rand(1, 2, h, w, generator=gen) * 2 - 1
    if sigma > 0:
        size = int(8 * sigma + 1)
        size += 1 - size % 2
        disp = gaussian_blur(disp, size, sigma)
    disp = disp * torch.tensor([alpha / w, alpha / h]).view(1, 2, 1, 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack((xs, ys), dim=-1)[None] + disp.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


class IPAdapterNoise(Node):
    SCHEMA = _schema("IPAdapterNoise", "IPAdapter Noise",
                     [ComboInput(name="type", choices=("fade", "dissolve", "gaussian", "shuffle")),
                      FloatInput(name="strength", default=1.0, min=0.0, max=1.0, step=0.05),
                      IntInput(name="blur", default=0, min=0, max=32, step=1),
                      InputSpec(name="image_optional", type="IMAGE", optional=True)])

    def execute(self, ctx, *, type: str, strength: float, blur: int, image_optional: torch.Tensor | None = None
                ) -> tuple[torch.Tensor]:
        if image_optional is None:
            image = torch.zeros(1, 3, SIZE, SIZE)
        else:
            x = check_image(image_optional, "IPAdapterNoise", "image_optional")[..., :3].movedim(-1, 1).float()
            side = min(x.shape[2], x.shape[3])
            top, left = (x.shape[2] - side) // 2, (x.shape[3] - side) // 2
            x = x[:, :, top:top + side, left:left + side]
            image = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", antialias=True)
        gen = torch.Generator().manual_seed(int(image.sum().item()) % 1000000007)
        if type == "fade":
            noise = image * (1 - strength) + torch.rand(image.shape, generator=gen) * strength
        elif type == "dissolve":
            mask = (torch.rand(image.shape, generator=gen) < strength).float()
            noise = image * (1 - mask) + torch.rand(image.shape, generator=gen) * mask
        elif type == "gaussian":
            noise = image + torch.randn(image.shape, generator=gen) * strength
        else:  # shuffle: distort, flip both ways, then multiplicative noise
            image = elastic(image, 75.0, (1 - strength) * 3.5, gen).flip(2).flip(3)
            n = torch.randn(image.shape, generator=gen) * (strength * 0.75)
            noise = image * (1 - n) + n
        noise = noise.clamp(0, 1)
        if blur > 0:
            noise = gaussian_blur(noise, blur + 1 - blur % 2)
        return (noise.movedim(1, -1),)


NODES = [PrepImageForClipVision, IPAdapterNoise]
