"""The composable ("custom") sampler nodes: SAMPLER, SIGMAS, NOISE and GUIDER values and their consumers.

Names, inputs, defaults and outputs are ComfyUI's, so saved advanced workflows load unchanged. Every
node only builds a value; SamplerCustom and SamplerCustomAdvanced hand them to `run_sampling`, the
same function KSampler uses, so KSamplerSelect + BasicScheduler + SamplerCustom gives KSampler's
latent bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from graph import BooleanInput, ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import INT_MAX
from nodes.sampling.ksampler import GuiderSpec, NoiseSpec, SamplerChoice, run_sampling
from nodes.sampling.published_schedules import AYS_MODEL_TYPES, align_your_steps, gits, polyexponential, vp
from nodes.sampling.schedules import exponential, karras, schedule

from .sampler_nodes import SAMPLER_NAMES, SCHEDULER_NAMES, progress_reporter

CATEGORY = "sampling/custom_sampling"
SD_SIGMA_MAX, SD_SIGMA_MIN = 14.614642, 0.0291675  # the SD1/SD2 sigma table's ends, ComfyUI's defaults


def _schema(node_id: str, display: str, category: str, inputs: list[InputSpec], outputs: list[OutputSpec],
            description: str = "") -> NodeSchema:
    return NodeSchema(node_type=node_id, display_name=display, category=category, inputs=inputs, outputs=outputs,
                      description=description, python_module="nodes.sd.custom_sampling")


def _out(kind: str, name: str | None = None) -> OutputSpec:
    return OutputSpec(type=kind, name=name or kind)


def _steps(default: int = 20, max_: int = 10000) -> IntInput:
    return IntInput(name="steps", default=default, min=1, max=max_)


def _sigma(name: str, default: float) -> FloatInput:
    return FloatInput(name=name, default=default, min=0.0, max=5000.0, step=0.01, round=False)


def _denoise() -> FloatInput:
    return FloatInput(name="denoise", default=1.0, min=0.0, max=1.0, step=0.01)


def _check_sigmas(sigmas: Any, node: str) -> torch.Tensor:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise ValueError(f"{node}: input 'sigmas' must be a 1-D tensor of noise levels (SIGMAS), got "
                         f"{type(sigmas).__name__}")
    return sigmas


# ------------------------------------------------------------------------------- SAMPLER


class KSamplerSelect(Node):
    SCHEMA = _schema("KSamplerSelect", "KSamplerSelect", f"{CATEGORY}/samplers",
                     [ComboInput(name="sampler_name", choices=SAMPLER_NAMES)], [_out("SAMPLER")])

    def execute(self, ctx, *, sampler_name: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(name=sampler_name),)


# ------------------------------------------------------------------------------- SIGMAS


class BasicScheduler(Node):
    SCHEMA = _schema("BasicScheduler", "BasicScheduler", f"{CATEGORY}/schedulers",
                     [InputSpec(name="model", type="MODEL"), ComboInput(name="scheduler", choices=SCHEDULER_NAMES),
                      _steps(), _denoise()], [_out("SIGMAS")])

    def execute(self, ctx, *, model: Any, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (schedule(model.sampling, scheduler, steps, denoise).float().cpu(),)


class KarrasScheduler(Node):
    SCHEMA = _schema("KarrasScheduler", "KarrasScheduler", f"{CATEGORY}/schedulers",
                     [_steps(), _sigma("sigma_max", SD_SIGMA_MAX), _sigma("sigma_min", SD_SIGMA_MIN),
                      FloatInput(name="rho", default=7.0, min=0.0, max=100.0, step=0.01, round=False)],
                     [_out("SIGMAS")])

    def execute(self, ctx, *, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        return (karras(None, steps, rho=rho, sigma_min=sigma_min, sigma_max=sigma_max).float(),)  # type: ignore[arg-type]


class ExponentialScheduler(Node):
    SCHEMA = _schema("ExponentialScheduler", "ExponentialScheduler", f"{CATEGORY}/schedulers",
                     [_steps(), _sigma("sigma_max", SD_SIGMA_MAX), _sigma("sigma_min", SD_SIGMA_MIN)],
                     [_out("SIGMAS")])

    def execute(self, ctx, *, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        if sigma_min <= 0 or sigma_max <= 0:
            raise ValueError("ExponentialScheduler: sigma_min and sigma_max must be above 0 (the schedule is "
                             "spaced in log-sigma)")
        return (exponential(None, steps, sigma_min=sigma_min, sigma_max=sigma_max).float(),)  # type: ignore[arg-type]


class SDTurboScheduler(Node):
    SCHEMA = _schema("SDTurboScheduler", "SDTurboScheduler", f"{CATEGORY}/schedulers",
                     [InputSpec(name="model", type="MODEL"), _steps(default=1, max_=10), _denoise()],
                     [_out("SIGMAS")])

    def execute(self, ctx, *, model: Any, steps: int, denoise: float) -> tuple[torch.Tensor]:
        # Timesteps 999, 899, ..., 99 (SD-Turbo's distillation grid); denoise < 1 starts further down it.
        start = 10 - int(10 * denoise)
        timesteps = torch.arange(999, 0, -100, dtype=torch.float32)[start:start + steps]
        sigmas = model.sampling.sigma(timesteps) if len(timesteps) else torch.zeros(0)
        return (torch.cat([sigmas.float(), torch.zeros(1)]),)


class AlignYourStepsScheduler(Node):
    SCHEMA = _schema("AlignYourStepsScheduler", "AlignYourStepsScheduler", f"{CATEGORY}/schedulers",
                     [ComboInput(name="model_type", choices=list(AYS_MODEL_TYPES)), _steps(default=10), _denoise()],
                     [_out("SIGMAS")], "NVIDIA's optimised noise levels for SD1, SDXL or SVD, resampled to the steps.")

    def execute(self, ctx, *, model_type: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (align_your_steps(model_type, steps, denoise),)


class GITSScheduler(Node):
    SCHEMA = _schema("GITSScheduler", "GITSScheduler", f"{CATEGORY}/schedulers",
                     [FloatInput(name="coeff", default=1.20, min=0.80, max=1.50, step=0.05),
                      IntInput(name="steps", default=10, min=2, max=1000), _denoise()],
                     [_out("SIGMAS")], "The published GITS noise levels for SD 1.x-style models.")

    def execute(self, ctx, *, coeff: float, steps: int, denoise: float) -> tuple[torch.Tensor]:
        try:
            return (gits(coeff, steps, denoise),)
        except ValueError as exc:
            raise ValueError(f"GITSScheduler: input 'coeff': {exc}") from None


class PolyexponentialScheduler(Node):
    SCHEMA = _schema("PolyexponentialScheduler", "PolyexponentialScheduler", f"{CATEGORY}/schedulers",
                     [_steps(), _sigma("sigma_max", SD_SIGMA_MAX), _sigma("sigma_min", SD_SIGMA_MIN),
                      FloatInput(name="rho", default=1.0, min=0.0, max=100.0, step=0.01, round=False)],
                     [_out("SIGMAS")])

    def execute(self, ctx, *, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        try:
            return (polyexponential(steps, sigma_min, sigma_max, rho),)
        except ValueError as exc:
            raise ValueError(f"PolyexponentialScheduler: {exc}") from None


class VPScheduler(Node):
    SCHEMA = _schema("VPScheduler", "VPScheduler", f"{CATEGORY}/schedulers",
                     [_steps(), _sigma("beta_d", 19.9), _sigma("beta_min", 0.1),
                      FloatInput(name="eps_s", default=0.001, min=0.0, max=1.0, step=0.0001, round=False)],
                     [_out("SIGMAS")])

    def execute(self, ctx, *, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[torch.Tensor]:
        return (vp(steps, beta_d, beta_min, eps_s),)


class SplitSigmas(Node):
    SCHEMA = _schema("SplitSigmas", "SplitSigmas", f"{CATEGORY}/sigmas",
                     [InputSpec(name="sigmas", type="SIGMAS"), IntInput(name="step", default=0, min=0, max=10000)],
                     [_out("SIGMAS", "high_sigmas"), _out("SIGMAS", "low_sigmas")])

    def execute(self, ctx, *, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigmas = _check_sigmas(sigmas, "SplitSigmas")
        return sigmas[: step + 1], sigmas[step:]


# ------------------------------------------------------------------------------- NOISE


class RandomNoise(Node):
    SCHEMA = _schema("RandomNoise", "RandomNoise", f"{CATEGORY}/noise",
                     [IntInput(name="noise_seed", default=0, min=0, max=INT_MAX, control_after_generate=True)],
                     [_out("NOISE")])

    def execute(self, ctx, *, noise_seed: int) -> tuple[NoiseSpec]:
        return (NoiseSpec(seed=noise_seed),)


class DisableNoise(Node):
    SCHEMA = _schema("DisableNoise", "DisableNoise", f"{CATEGORY}/noise", [], [_out("NOISE")])

    def execute(self, ctx) -> tuple[NoiseSpec]:
        return (NoiseSpec(seed=0, enabled=False),)


# ------------------------------------------------------------------------------- GUIDER


def _cfg() -> FloatInput:
    return FloatInput(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)


class CFGGuider(Node):
    SCHEMA = _schema("CFGGuider", "CFGGuider", f"{CATEGORY}/guiders",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="positive", type="CONDITIONING"),
                      InputSpec(name="negative", type="CONDITIONING"), _cfg()], [_out("GUIDER")])

    def execute(self, ctx, *, model: Any, positive: list, negative: list, cfg: float) -> tuple[GuiderSpec]:
        return (GuiderSpec(model=model, positive=positive, negative=negative, cfg=cfg),)


class BasicGuider(Node):
    SCHEMA = _schema("BasicGuider", "BasicGuider", f"{CATEGORY}/guiders",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="conditioning", type="CONDITIONING")],
                     [_out("GUIDER")])

    def execute(self, ctx, *, model: Any, conditioning: list) -> tuple[GuiderSpec]:
        return (GuiderSpec(model=model, positive=conditioning, negative=None, cfg=1.0),)


# ------------------------------------------------------------------------------- the samplers


def _run(ctx: Any, node: str, *, noise: Any, guider: Any, sampler: Any, sigmas: Any,
         latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    for name, value, kind in (("noise", noise, NoiseSpec), ("guider", guider, GuiderSpec),
                              ("sampler", sampler, SamplerChoice)):
        if not isinstance(value, kind):
            raise ValueError(f"{node}: input '{name}' got a {type(value).__name__}; expected the value of a "
                             f"built-in {name.upper()} node (plugin-made {name.upper()} values are not supported)")
    sigmas = _check_sigmas(sigmas, node)
    if not all(math.isfinite(float(s)) for s in sigmas):
        raise ValueError(f"{node}: input 'sigmas' holds a non-finite noise level")
    return run_sampling(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent=latent_image,
                        progress=progress_reporter(ctx))


_LATENT_OUTS = [_out("LATENT", "output"), _out("LATENT", "denoised_output")]


class SamplerCustom(Node):
    SCHEMA = _schema("SamplerCustom", "SamplerCustom", CATEGORY,
                     [InputSpec(name="model", type="MODEL"), BooleanInput(name="add_noise", default=True),
                      IntInput(name="noise_seed", default=0, min=0, max=INT_MAX, control_after_generate=True),
                      _cfg(), InputSpec(name="positive", type="CONDITIONING"),
                      InputSpec(name="negative", type="CONDITIONING"), InputSpec(name="sampler", type="SAMPLER"),
                      InputSpec(name="sigmas", type="SIGMAS"), InputSpec(name="latent_image", type="LATENT")],
                     _LATENT_OUTS)

    def execute(self, ctx, *, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: list,
                negative: list, sampler: Any, sigmas: Any, latent_image: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        noise = NoiseSpec(seed=noise_seed, enabled=add_noise)
        guider = GuiderSpec(model=model, positive=positive, negative=negative, cfg=cfg)
        return _run(ctx, "SamplerCustom", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                    latent_image=latent_image)


class SamplerCustomAdvanced(Node):
    SCHEMA = _schema("SamplerCustomAdvanced", "SamplerCustomAdvanced", CATEGORY,
                     [InputSpec(name="noise", type="NOISE"), InputSpec(name="guider", type="GUIDER"),
                      InputSpec(name="sampler", type="SAMPLER"), InputSpec(name="sigmas", type="SIGMAS"),
                      InputSpec(name="latent_image", type="LATENT")], _LATENT_OUTS)

    def execute(self, ctx, *, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent_image: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        return _run(ctx, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                    latent_image=latent_image)


NODES = [KSamplerSelect, BasicScheduler, KarrasScheduler, ExponentialScheduler, SDTurboScheduler,
         AlignYourStepsScheduler, GITSScheduler, PolyexponentialScheduler, VPScheduler, SplitSigmas,
         RandomNoise, DisableNoise, CFGGuider, BasicGuider, SamplerCustom, SamplerCustomAdvanced]
