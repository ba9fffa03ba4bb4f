"""Noise with the seed semantics users' saved images depend on.

Initial noise: a CPU generator seeded with the seed draws the whole latent shape at once in float32
(image k of a batch is the k-th slice), or, with `batch_index`, one [1, C, h, w] draw per index up to
the largest so any image of a batch can be reproduced alone. Noise drawn during sampling (ancestral
and SDE samplers) also comes from a CPU generator seeded by the seed, so a seed gives the same image
on the CPU and on any GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def initial_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(latent.shape, dtype=torch.float32, generator=generator, device="cpu")
    wanted = sorted(set(int(i) for i in batch_index))
    one = [1, *latent.shape[1:]]
    draws: dict[int, torch.Tensor] = {}
    for i in range(wanted[-1] + 1):
        noise = torch.randn(one, dtype=torch.float32, generator=generator, device="cpu")
        if i in wanted:
            draws[i] = noise
    return torch.cat([draws[int(i)] for i in batch_index], dim=0)


class GaussianNoise:
    """Fresh standard normal noise per call, from a seeded CPU generator."""

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.like = like
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(self.like.shape, dtype=torch.float32, generator=self.generator, device="cpu")
        return noise.to(self.like.device, self.like.dtype)


class BrownianNoise:
    """Noise increments of one Brownian path per seed, normalised per step (for SDE samplers).

    The same seed gives the same path whatever the step count, which keeps SDE samplers stable when
    steps change. Built on torchsde's Brownian tree, evaluated on the CPU.
    """

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seed: int) -> None:
        import torchsde

        self.like = like
        lo, hi = float(sigma_min), float(sigma_max)
        self.bounds = (lo, hi)  # queries are clamped to these ...
        w0 = torch.zeros(like.shape[1:], dtype=torch.float32)
        # One tree per image, seeded seed, seed+1, ... so a batch's images are independent.
        # ... and the trees span a hair more, since torchsde rounds its ends and would otherwise warn
        # that a query at sigma_max lies outside by a rounding error.
        margin = 1e-5 * (hi - lo)
        self.trees = [torchsde.BrownianTree(lo - margin, w0, hi + margin, entropy=seed + i)
                      for i in range(like.shape[0])]

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        low, high = self.bounds
        t0 = min(max(float(sigma_next), low), high)  # float rounding must not step outside the tree
        t1 = min(max(float(sigma), low), high)
        lo, hi = min(t0, t1), max(t0, t1)
        if hi - lo < 1e-12:
            return torch.zeros_like(self.like)
        sign = 1.0 if t1 >= t0 else -1.0
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return (w / abs(hi - lo) ** 0.5).to(self.like.device, self.like.dtype)
