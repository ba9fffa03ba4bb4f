"""`comfy.samplers` for ComfyUI packs: the sampler and scheduler names, SAMPLER values and KSampler.

The lists are the engine's own (nodes.sampling), so a pack's `(comfy.samplers.KSampler.SAMPLERS,)` combo
offers exactly what KSampler accepts. `KSampler(model, steps, ...).sample(noise, ...)`,
`sampler_object(name)` and `KSAMPLER(fn)` (a pack's own sampling function) run through the engine's
sampling (comfy.sample documents the limits).
"""

from __future__ import annotations

from typing import Any

from nodes.sampling.ksampler import SamplerChoice
from nodes.sampling.samplers import SAMPLERS as _SAMPLERS
from nodes.sampling.schedules import SCHEDULERS as _SCHEDULERS
from nodes.sampling.schedules import schedule

SAMPLER_NAMES = list(_SAMPLERS)
KSAMPLER_NAMES = list(SAMPLER_NAMES)
SCHEDULER_NAMES = list(_SCHEDULERS)


def sampler_object(name: str) -> SamplerChoice:
    """A SAMPLER value (what KSamplerSelect outputs) for a sampler name."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; Sumie has {', '.join(SAMPLER_NAMES)}")
    return SamplerChoice(name=name)


def ksampler(sampler_name: str, extra_options: dict[str, Any] | None = None,
             inpaint_options: dict[str, Any] | None = None) -> SamplerChoice:
    """A SAMPLER value with keyword options for the sampling function (e.g. eta, s_noise)."""
    sampler_object(sampler_name)
    return SamplerChoice(name=sampler_name, options=dict(extra_options or {}))


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> Any:
    """The schedule for `steps` steps; `model_sampling` is a MODEL's `.sampling` (or the MODEL itself)."""
    sampling = getattr(model_sampling, "sampling", model_sampling)
    return schedule(sampling, scheduler_name, int(steps))


class KSAMPLER(SamplerChoice):
    """A SAMPLER running a pack's own k-diffusion-style function: `fn(model, x, sigmas, extra_args=None,
    callback=None, disable=None, **options)`, where `model(x, sigma)` returns the denoised latent and
    `callback({"i", "x", "denoised", "sigma", "sigma_hat"})` reports a step (progress and interrupts)."""

    def __init__(self, sampler_function: Any, extra_options: dict[str, Any] | None = None,
                 inpaint_options: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "name", getattr(sampler_function, "__name__", "custom"))
        object.__setattr__(self, "options", dict(extra_options or {}))
        object.__setattr__(self, "sampler_function", sampler_function)

    @property
    def brownian(self) -> bool:
        return False

    def function(self) -> Any:
        fn = self.sampler_function

        def run(denoise: Any, x: Any, sigmas: Any, stepper: Any, **options: Any) -> Any:
            def model(x_in: Any, sigma: Any, **_: Any) -> Any:
                return denoise(x_in, sigma.reshape(-1)[0] if getattr(sigma, "dim", lambda: 0)() else sigma)

            def callback(info: dict[str, Any]) -> None:
                stepper.step(int(info["i"]), info["x"], info["denoised"])

            return fn(model, x, sigmas, extra_args={}, callback=callback, disable=True, **options)

        return run


class KSampler:
    """ComfyUI's sampler object: the names as class lists, and `sample()` over the engine's sampling."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES

    def __init__(self, model: Any, steps: int, device: Any = None, sampler: str | None = None,
                 scheduler: str | None = None, denoise: float | None = None, model_options: Any = None) -> None:
        self.model = model
        self.steps = int(steps)
        self.device = device
        self.sampler = sampler or SAMPLER_NAMES[0]
        self.scheduler = scheduler or SCHEDULER_NAMES[0]
        self.denoise = 1.0 if denoise is None else float(denoise)
        self.sigmas = schedule(model.sampling, self.scheduler, self.steps, self.denoise)

    def sample(self, noise: Any, positive: Any, negative: Any, cfg: float, latent_image: Any = None,
               start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
               denoise_mask: Any = None, sigmas: Any = None, callback: Any = None, disable_pbar: bool = False,
               seed: int | None = None) -> Any:
        from .sample import sample

        return sample(self.model, noise, self.steps, cfg, self.sampler, self.scheduler, positive, negative,
                      latent_image, denoise=self.denoise, start_step=start_step, last_step=last_step,
                      force_full_denoise=force_full_denoise, noise_mask=denoise_mask,
                      sigmas=self.sigmas if sigmas is None else sigmas, callback=callback, seed=seed)


__all__ = ["KSAMPLER", "KSAMPLER_NAMES", "SAMPLER_NAMES", "SCHEDULER_NAMES", "KSampler", "calculate_sigmas", "ksampler",
           "sampler_object"]
