"""Canny edge detection in plain torch, following the steps and defaults ComfyUI's Canny node uses.

Grayscale (ITU-R 601 weights) -> 5×5 Gaussian blur, sigma 1 (reflected borders) -> Sobel gradients
(replicated borders) -> magnitude sqrt(gx² + gy² + 1e-6) -> non-maximum suppression along the
gradient direction rounded to 45° -> double threshold (weak > low, strong > high) -> hysteresis:
weak pixels touching a strong one (8-neighbourhood) become strong until nothing changes. The result
is a binary edge map. Thresholds apply to the gradient magnitude of an image in 0..1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-6
GRAY = (0.299, 0.587, 0.114)
# Neighbour offsets (dy, dx) for gradient directions 0°, 45°, ..., 315° (y grows downwards).
DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _neighbour_kernels() -> torch.Tensor:
    """[8, 1, 3, 3]: convolving with kernel k gives each pixel's neighbour in direction k."""
    kernels = torch.zeros(8, 1, 3, 3)
    for k, (dy, dx) in enumerate(DIRECTIONS):
        kernels[k, 0, 1 + dy, 1 + dx] = 1.0
    return kernels


def canny(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Binary edges [B, 1, H, W] (0 or 1) of an image [B, C, H, W] in 0..1 (C = 1 or 3)."""
    if low_threshold > high_threshold:
        raise ValueError(f"low_threshold {low_threshold} is above high_threshold {high_threshold}; "
                         "expected low <= high")
    x = image.float()
    if x.shape[1] == 3:
        x = sum(x[:, i:i + 1] * w for i, w in enumerate(GRAY))
    elif x.shape[1] != 1:
        raise ValueError(f"canny expects 1 or 3 channels, got {x.shape[1]}")
    dev = x.device
    g = _gaussian_kernel().to(dev)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), g.view(1, 1, 5, 1))
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), g.view(1, 1, 1, 5))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=dev)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().contiguous().view(1, 1, 3, 3))
    magnitude = torch.sqrt(gx * gx + gy * gy + EPS)

    direction = torch.round(torch.rad2deg(torch.atan2(gy, gx)) / 45.0)
    forward = (direction % 8).long()
    backward = ((direction + 4) % 8).long()
    neighbours = _neighbour_kernels().to(dev)
    differences = magnitude - F.conv2d(magnitude, neighbours, padding=1)
    is_max = torch.minimum(differences.gather(1, forward), differences.gather(1, backward)) > 0.0
    magnitude = magnitude * is_max

    edges = (magnitude > low_threshold).float() * 0.5 + (magnitude > high_threshold).float() * 0.5
    for _ in range(math.prod(edges.shape[-2:])):  # bounded: each round strengthens at least one pixel
        strong, weak = (edges == 1.0).float(), (edges == 0.5).float()
        touching = (F.conv2d(strong, neighbours, padding=1) > 0).any(dim=1, keepdim=True).float()
        updated = strong + weak * touching + weak * (1 - touching) * 0.5
        if torch.equal(updated, edges):
            break
        edges = updated
    return (edges == 1.0).float()


__all__ = ["canny"]
