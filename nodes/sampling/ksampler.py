"""The one sampling run behind KSampler, KSamplerAdvanced and the composable (custom) sampler nodes.

A run is made of four values, as ComfyUI's custom-sampling nodes name them:
- NOISE   (`NoiseSpec`): the initial noise draw and the seed of the noise drawn while sampling;
- SIGMAS  (a 1-D float tensor): the noise levels, descending;
- GUIDER  (`GuiderSpec`): the model and its conditioning, turned into a CFG denoiser per run;
- SAMPLER (`SamplerChoice`): the sampling method.
`run_sampling` takes exactly these; KSampler builds them from its widgets (`sample`), the custom
nodes take them from links. There is no second copy of the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from nodes.base.handles import ModelHandle
from nodes.models.model_patches import ActivePatches, applied

from .guidance import Guider
from .inpaint import inpaint_concat, latent_mask, mask_function
from .noise import BrownianNoise, GaussianNoise, initial_noise
from .samplers import BROWNIAN, get_sampler
from .schedules import schedule
from .steps import Stepper
from .unet_additions import addition_modules, conditioning_patches

ProgressFn = Callable[[int, int, Any], None]


# ------------------------------------------------------------------------------- the four values


@dataclass(frozen=True, kw_only=True)
class NoiseSpec:
    """NOISE: the initial noise of a run (or none) and the seed of the noise drawn while sampling.

    `seed` and `generate_noise(latent)` are the names ComfyUI plugins use on NOISE values.
    """

    seed: int
    enabled: bool = True

    def generate_noise(self, latent: dict[str, Any]) -> torch.Tensor:
        samples = latent["samples"]
        if not self.enabled:
            return torch.zeros(samples.shape, dtype=torch.float32)
        return initial_noise(samples, self.seed, latent.get("batch_index"))


@dataclass(frozen=True, kw_only=True)
class SamplerChoice:
    """SAMPLER: a sampling method by name (and keyword options for it)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def function(self) -> Callable[..., torch.Tensor]:
        return get_sampler(self.name)

    @property
    def brownian(self) -> bool:
        return self.name in BROWNIAN


@dataclass(frozen=True, kw_only=True, eq=False)
class GuiderSpec:
    """GUIDER: a model and its conditioning; cfg = 1 with no negative is BasicGuider."""

    model: ModelHandle
    positive: Sequence[Any]
    negative: Sequence[Any] | None = None
    cfg: float = 1.0

    def build(self, *, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
              concat: torch.Tensor | None, patches: ActivePatches | None = None) -> Guider:
        return Guider(self.model, self.positive, self.negative, self.cfg, x=x, device=device, dtype=dtype,
                      concat=concat, patches=patches)


@dataclass(frozen=True, kw_only=True)
class SamplingRequest:
    """KSampler's and KSamplerAdvanced's widgets."""

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


def sample(model: ModelHandle, positive: Sequence[Any], negative: Sequence[Any], latent: dict[str, Any],
           req: SamplingRequest, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """KSampler: the composition of RandomNoise/DisableNoise, the named schedule, CFGGuider and the sampler."""
    noise = NoiseSpec(seed=req.seed, enabled=req.add_noise)
    guider = GuiderSpec(model=model, positive=positive, negative=negative, cfg=req.cfg)
    out, _ = run_sampling(noise=noise, guider=guider, sampler=SamplerChoice(name=req.sampler_name),
                          sigmas=sigmas_for(model, req), latent=latent, progress=progress)
    return out


# ------------------------------------------------------------------------------- the run


def run_sampling(*, noise: NoiseSpec, guider: GuiderSpec, sampler: SamplerChoice, sigmas: torch.Tensor,
                 latent: dict[str, Any], progress: ProgressFn | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample `latent` and return (output LATENT, denoised LATENT: the last x0 estimate), both on the CPU."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    if len(sigmas) <= 1:
        return dict(latent), dict(latent)  # nothing to do (e.g. start_at_step >= end_at_step)
    model = guider.model
    manager = model.manager
    extra = addition_modules(guider.positive, guider.negative)  # ControlNets etc. join the U-Net on the device
    placement = manager.use(model.unet, *extra) if manager is not None else nullcontext(None)
    with placement as device, applied(model, conditioning_patches(guider.positive, guider.negative)) as patches:
        if device is None:
            device = next(model.unet.parameters()).device
        return _run(guider, noise, sampler, latent, sigmas, progress, device, patches)


class _MaskedDenoiser:
    """Holds the latent outside the noise mask at the input image (noised to the current level).

    `mask_at(sigma, mask)` gives the mask of each step (the model's denoise mask function, if any).
    """

    def __init__(self, guider: Guider, mask: torch.Tensor, latent_in: torch.Tensor, noise: torch.Tensor,
                 mask_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.guider, self.mask, self.latent_in, self.noise, self.mask_at = guider, mask, latent_in, noise, mask_at
        self.last_uncond: torch.Tensor | None = None
        self.last_mask = mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.last_mask = self.mask_at(sigma, self.mask)
        keep = self.latent_in * (1 - mask)
        x = x * mask + (self.latent_in + self.noise * sigma) * (1 - mask)
        out = self.guider(x, sigma) * mask + keep
        uncond = self.guider.last_uncond
        self.last_uncond = None if uncond is None else uncond * mask + keep
        return out


def _run(spec: GuiderSpec, noise_spec: NoiseSpec, sampler: SamplerChoice, latent: dict[str, Any],
         sigmas: torch.Tensor, progress: ProgressFn | None, device: torch.device, patches: ActivePatches
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    model = spec.model
    dtype = next(model.unet.parameters()).dtype
    fmt = model.latent_format
    latent_image = latent["samples"]
    noise = noise_spec.generate_noise(latent)
    latent_in = fmt.process_in(latent_image.float()).to(device)
    noise = noise.to(device)
    sigmas = sigmas.to(device)
    mask = latent.get("noise_mask")
    mask = latent_mask(mask, latent_in).to(device) if mask is not None else None

    sigma0 = float(sigmas[0])
    if math.isclose(sigma0, model.sampling.sigma_max, rel_tol=1e-5) or sigma0 > model.sampling.sigma_max:
        x = noise * math.sqrt(1.0 + sigma0**2) + latent_in
    else:
        x = noise * sigma0 + latent_in

    concat = None
    if model.in_channels > latent_in.shape[1]:  # an inpainting model: mask + masked-image latent channels
        concat = inpaint_concat(model, spec.positive, latent_in, mask)
    guider = spec.build(x=latent_in, device=device, dtype=dtype, concat=concat, patches=patches)
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = guider
    if mask is not None:
        denoise = _MaskedDenoiser(guider, mask, latent_in, noise, mask_function(model, sigmas))

    steps = len(sigmas) - 1
    if sampler.brownian:
        positive_sigmas = sigmas[sigmas > 0]
        source: Any = BrownianNoise(x, float(positive_sigmas.min()), float(sigmas.max()), noise_spec.seed)
    else:
        source = GaussianNoise(x, noise_spec.seed)

    last: dict[str, torch.Tensor] = {}

    def on_step(i: int, x_now: torch.Tensor, denoised: torch.Tensor) -> None:
        last["x0"] = denoised
        if progress is not None:
            progress(i + 1, steps, _preview(fmt, denoised))

    stepper = Stepper(callback=on_step, noise=source, steps=steps)
    x = sampler.function()(denoise, x, sigmas, stepper, **sampler.options)
    if isinstance(denoise, _MaskedDenoiser):
        x = x * denoise.last_mask + latent_in * (1 - denoise.last_mask)
    out = dict(latent)
    out["samples"] = fmt.process_out(x).float().cpu()
    denoised_out = dict(latent)
    denoised_out["samples"] = fmt.process_out(last["x0"]).float().cpu() if "x0" in last else out["samples"]
    return out, denoised_out


def _preview(fmt: Any, denoised: torch.Tensor) -> Callable[[], Any]:
    """A zero-argument callable making a small RGB preview (a PIL image) only if a listener wants one."""
    first = denoised[:1].detach()

    def make() -> Any:
        import numpy as np
        from PIL import Image

        rgb = fmt.preview_rgb(first)[0]
        return Image.fromarray((rgb.numpy() * 255).clip(0, 255).astype(np.uint8))

    return make


__all__ = ["GuiderSpec", "NoiseSpec", "SamplerChoice", "SamplingRequest", "run_sampling", "sample", "sigmas_for"]
