"""`comfy.sample` for ComfyUI packs: seeded noise and sampling a latent tensor with a MODEL.

`prepare_noise(latent, seed, batch_inds)` is the engine's initial noise (nodes.sampling.noise), so a
pack's own sampler gives the same image as KSampler for a seed. `sample()` / `sample_custom()` run the
engine's sampling with that noise; progress goes to the running node (honouring interrupts). Limits:
a `callback` made by `latent_preview.prepare_callback` is served by that progress; other callbacks are
not called, because the engine does not hand out the per-step x0/x tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nodes.sampling.ksampler import GuiderSpec, NoiseSpec, SamplerChoice, SamplingRequest, run_sampling, sigmas_for
from nodes.sampling.noise import initial_noise

from .. import _runtime


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Any = None) -> torch.Tensor:
    """The initial noise for a latent batch ([B, C, h, w]); `noise_inds` picks images of a larger batch."""
    return initial_noise(latent_image, int(seed), None if noise_inds is None else [int(i) for i in noise_inds])


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with the wrong channel count (an empty latent for another model) gets the model's."""
    channels = int(getattr(getattr(model, "latent_format", None), "channels", latent_image.shape[1]))
    if latent_image.shape[1] != channels and torch.count_nonzero(latent_image) == 0:
        shape = list(latent_image.shape)
        shape[1] = channels
        return torch.zeros(shape, dtype=latent_image.dtype, device=latent_image.device)
    return latent_image


@dataclass(frozen=True, kw_only=True)
class _GivenNoise(NoiseSpec):
    """NOISE holding a tensor the pack drew itself (the seed still drives noise drawn while sampling)."""

    tensor: torch.Tensor

    def generate_noise(self, latent: dict[str, Any]) -> torch.Tensor:
        if not self.enabled:
            return torch.zeros(latent["samples"].shape, dtype=torch.float32)
        return self.tensor


def _progress() -> Any:
    ctx = _runtime.context()
    return None if ctx is None else (lambda step, total, preview: ctx.progress(step, total, preview))


def _run(model: Any, noise: torch.Tensor, guider: GuiderSpec, sampler: SamplerChoice, sigmas: Any,
         latent_image: torch.Tensor, noise_mask: Any, seed: int | None, enabled: bool = True) -> torch.Tensor:
    latent: dict[str, Any] = {"samples": latent_image}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    spec = _GivenNoise(seed=int(seed or 0), enabled=enabled, tensor=noise)
    out, _ = run_sampling(noise=spec, guider=guider, sampler=sampler, sigmas=sigmas, latent=latent,
                          progress=_progress())
    return out["samples"]


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: Any, negative: Any, latent_image: torch.Tensor, denoise: float = 1.0, disable_noise: bool = False,
           start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
           noise_mask: Any = None, sigmas: Any = None, callback: Any = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    """KSampler's sampling of `latent_image` from `noise`; returns the sampled latent tensor."""
    req = SamplingRequest(seed=int(seed or 0), steps=int(steps), cfg=float(cfg), sampler_name=sampler_name,
                          scheduler=scheduler, denoise=float(denoise), add_noise=not disable_noise,
                          start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise)
    if sigmas is None:
        sigmas = sigmas_for(model, req)
    guider = GuiderSpec(model=model, positive=positive, negative=negative, cfg=float(cfg))
    return _run(model, noise, guider, SamplerChoice(name=sampler_name), sigmas, latent_image, noise_mask, seed,
                enabled=not disable_noise)


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: Any, positive: Any,
                  negative: Any, latent_image: torch.Tensor, noise_mask: Any = None, callback: Any = None,
                  disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """SamplerCustom's sampling: a SAMPLER value and explicit sigmas."""
    guider = GuiderSpec(model=model, positive=positive, negative=negative, cfg=float(cfg))
    return _run(model, noise, guider, sampler, sigmas, latent_image, noise_mask, seed)


__all__ = ["fix_empty_latent_channels", "prepare_noise", "sample", "sample_custom"]
