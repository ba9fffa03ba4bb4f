"""Tensor resizing shared by the node modules and the sampler: latents, masks, hints and images.

`resize_nchw` is ComfyUI's `common_upscale` contract: [B, C, H, W] to (height, width) by one of its
methods, optionally centre-cropped to the target aspect first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), with their lengths interpolated linearly."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    near = so.abs() < 1e-4  # (anti)parallel vectors: fall back to a linear blend of the unit vectors
    safe = torch.where(near, torch.ones_like(so), so)
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(near, t, torch.sin(t * omega) / safe)
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = direction * (na * (1 - t) + nb * t)
    return torch.where((na < 1e-12) & (nb < 1e-12), torch.zeros_like(out), out)


def _slerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resize one spatial axis by slerping neighbours at half-pixel-centred sample positions."""
    old = x.shape[dim]
    if old == size:
        return x
    pos = ((torch.arange(size, dtype=torch.float64) + 0.5) * (old / size) - 0.5).clamp(0, old - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=old - 1)
    t = (pos - lo).to(x.dtype)
    shape = [1, 1, 1, 1]
    shape[dim] = size
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return _slerp(a, b, t.reshape(shape))


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear-style resize that slerps instead of lerping, preserving latent vector lengths."""
    orig = x.dtype
    x = x.float()
    return _slerp_axis(_slerp_axis(x, width, 3), height, 2).to(orig)


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Trim [..., H, W] symmetrically so its aspect ratio matches width:height (ComfyUI's "center")."""
    old_h, old_w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    cx = cy = 0
    if old_aspect > new_aspect:
        cx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        cy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x[..., cy:old_h - cy, cx:old_w - cx]


def resize_nchw(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize [B, C, H, W] to (height, width) with one of UPSCALE_METHODS (plus "lanczos" for images)."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}: both sides must be at least 1")
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    elif crop != "disabled":
        raise ValueError(f"unknown crop method {crop!r}; expected one of {list(CROP_METHODS)}")
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return _lanczos(x, width, height)
    if method not in ("nearest-exact", "bilinear", "area", "bicubic"):
        raise ValueError(f"unknown upscale method {method!r}")
    orig = x.dtype
    x = x.float() if orig in (torch.float16, torch.bfloat16) else x
    if method in ("bilinear", "bicubic"):
        out = F.interpolate(x, size=(height, width), mode=method, align_corners=False)
    else:
        out = F.interpolate(x, size=(height, width), mode=method)
    return out.to(orig)


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos through Pillow on float ("F") planes, so no 8-bit rounding happens on the way."""
    import numpy as np
    from PIL import Image

    src = x.detach().float().cpu().numpy()
    out = np.empty((src.shape[0], src.shape[1], height, width), dtype=np.float32)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(src[b, c]), mode="F")
            out[b, c] = np.asarray(plane.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return torch.from_numpy(out).to(x.dtype)


def repeat_to_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Tile a [N, ...] tensor along dim 0 to exactly `batch` items (masks shorter than the batch)."""
    if x.shape[0] == batch:
        return x
    reps = math.ceil(batch / x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch]


