"""The sampling run behind KSampler and KSamplerAdvanced: noise, schedule, guidance, sampler, masks.

Built from four parts that the composable sampler nodes also use: a noise draw, a sigma schedule,
a guider (the CFG denoiser) and a sampling method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nodes.sd.handles import ModelHandle

from .guidance import Guider
from .noise import BrownianNoise, GaussianNoise, initial_noise
from .samplers import BROWNIAN, Stepper, get_sampler
from .schedules import schedule

ProgressFn = Callable[[int, int, Any], None]


@dataclass(frozen=True, kw_only=True)
class SamplingRequest:
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float = 1.0
    add_noise: bool = True
    start_step: int | None = None
    last_step: int | None = None
    force_full_denoise: bool = False


def sigmas_for(model: ModelHandle, req: SamplingRequest) -> torch.Tensor:
    """The schedule with KSamplerAdvanced's start/end step window applied."""
    sigmas = schedule(model.sampling, req.scheduler, req.steps, req.denoise)
    if req.last_step is not None and req.last_step < len(sigmas) - 1:
        sigmas = sigmas[: req.last_step + 1].clone()
        if req.force_full_denoise:
            sigmas[-1] = 0
    if req.start_step is not None:
        sigmas = sigmas[req.start_step:] if req.start_step < len(sigmas) - 1 else sigmas[:0]
    return sigmas


def _latent_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A MASK ([B,H,W] or [H,W] or [B,1,H,W]) resized to the latent and broadcast to its batch."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    m = F.interpolate(m, size=like.shape[2:], mode="bilinear", align_corners=False)
    if m.shape[0] < like.shape[0]:
        m = m.repeat(math.ceil(like.shape[0] / m.shape[0]), 1, 1, 1)[: like.shape[0]]
    return m[:, :1]


def sample(model: ModelHandle, positive: Sequence[Any], negative: Sequence[Any], latent: dict[str, Any],
           req: SamplingRequest, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run one sampling pass and return the new LATENT (raw VAE space, on the CPU)."""
    latent_image = latent["samples"]
    sigmas = sigmas_for(model, req)
    if len(sigmas) <= 1:
        return dict(latent)  # nothing to do (e.g. start_at_step >= end_at_step)
    manager = model.manager
    if manager is not None:
        with manager.use(model.unet) as device:
            return _run(model, positive, negative, latent, latent_image, sigmas, req, progress, device)
    device = next(model.unet.parameters()).device
    return _run(model, positive, negative, latent, latent_image, sigmas, req, progress, device)


def _run(model: ModelHandle, positive, negative, latent: dict[str, Any], latent_image: torch.Tensor,
         sigmas: torch.Tensor, req: SamplingRequest, progress: ProgressFn | None,
         device: torch.device) -> dict[str, Any]:
    dtype = next(model.unet.parameters()).dtype
    fmt = model.latent_format
    if req.add_noise:
        noise = initial_noise(latent_image, req.seed, latent.get("batch_index"))
    else:
        noise = torch.zeros(latent_image.shape, dtype=torch.float32)
    latent_in = fmt.process_in(latent_image.float()).to(device)
    noise = noise.to(device)
    sigmas = sigmas.to(device)
    mask = latent.get("noise_mask")
    mask = _latent_mask(mask, latent_in).to(device) if mask is not None else None

    sigma0 = float(sigmas[0])
    if math.isclose(sigma0, model.sampling.sigma_max, rel_tol=1e-5) or sigma0 > model.sampling.sigma_max:
        x = noise * math.sqrt(1.0 + sigma0**2) + latent_in
    else:
        x = noise * sigma0 + latent_in

    concat = None
    if model.in_channels > latent_in.shape[1]:  # an inpainting model: mask + masked-image latent channels
        inpaint_mask = mask if mask is not None else torch.ones_like(latent_in[:, :1])
        concat = torch.cat([inpaint_mask, latent_in], dim=1)
    guider = Guider(model, positive, negative, req.cfg, x=latent_in, device=device, dtype=dtype, concat=concat)
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = guider
    if mask is not None:
        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            # Outside the mask the latent is held at the input image (noised to the current level).
            x = x * mask + (latent_in + noise * sigma) * (1 - mask)
            return guider(x, sigma) * mask + latent_in * (1 - mask)

    steps = len(sigmas) - 1
    if req.sampler_name in BROWNIAN:
        positive_sigmas = sigmas[sigmas > 0]
        source = BrownianNoise(x, float(positive_sigmas.min()), float(sigmas.max()), req.seed)
    else:
        source = GaussianNoise(x, req.seed)

    def on_step(i: int, x_now: torch.Tensor, denoised: torch.Tensor) -> None:
        if progress is not None:
            progress(i + 1, steps, _preview(fmt, denoised))

    x = get_sampler(req.sampler_name)(denoise, x, sigmas, Stepper(callback=on_step, noise=source, steps=steps))
    if mask is not None:
        x = x * mask + latent_in * (1 - mask)
    out = dict(latent)
    out["samples"] = fmt.process_out(x).float().cpu()
    return out


def _preview(fmt: Any, denoised: torch.Tensor) -> Callable[[], Any]:
    """A zero-argument callable making a small RGB preview (a PIL image) only if a listener wants one."""
    first = denoised[:1].detach()

    def make() -> Any:
        import numpy as np
        from PIL import Image

        rgb = fmt.preview_rgb(first)[0]
        return Image.fromarray((rgb.numpy() * 255).clip(0, 255).astype(np.uint8))

    return make
