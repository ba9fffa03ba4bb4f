"""KSampler and KSamplerAdvanced: the sampling nodes of every saved Stable Diffusion workflow.

Each is the composition of the custom-sampling parts (nodes/sd/custom_sampling.py): RandomNoise (or
disabled noise), the named schedule (BasicScheduler, plus KSamplerAdvanced's step window), CFGGuider
and KSamplerSelect, run by the one `run_sampling` (see `nodes.sampling.ksampler.sample`).
"""

from __future__ import annotations

from typing import Any

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import INT_MAX
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sampling.samplers import SAMPLERS
from nodes.sampling.schedules import SCHEDULERS

SAMPLER_NAMES = list(SAMPLERS)
SCHEDULER_NAMES = list(SCHEDULERS)


def _common_inputs(seed_name: str) -> list[InputSpec]:
    return [
        InputSpec(name="model", type="MODEL", tooltip="The model used for denoising the input latent."),
        IntInput(name=seed_name, default=0, min=0, max=INT_MAX, control_after_generate=True,
                 tooltip="The random seed used for creating the noise."),
        IntInput(name="steps", default=20, min=1, max=10000, tooltip="The number of steps used in denoising."),
        FloatInput(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                   tooltip="Classifier-free guidance scale: higher follows the prompt more closely."),
        ComboInput(name="sampler_name", choices=SAMPLER_NAMES, tooltip="The sampling method."),
        ComboInput(name="scheduler", choices=SCHEDULER_NAMES, tooltip="How noise levels are spaced."),
        InputSpec(name="positive", type="CONDITIONING", tooltip="What to include in the image."),
        InputSpec(name="negative", type="CONDITIONING", tooltip="What to exclude from the image."),
        InputSpec(name="latent_image", type="LATENT", tooltip="The latent image to denoise."),
    ]


def progress_reporter(ctx: Any):
    """Sampling steps reported through the node context (which also honours interrupts)."""

    def report(step: int, total: int, preview: Any) -> None:
        ctx.progress(step, total, preview)

    return report


class KSampler(Node):
    SCHEMA = NodeSchema(
        node_type="KSampler", display_name="KSampler", category="sampling",
        description="Denoises a latent image with the model, guided by the positive and negative prompts.",
        inputs=[*_common_inputs("seed"),
                FloatInput(name="denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                           tooltip="How much of the input latent is replaced: 1.0 for text-to-image.")],
        outputs=[OutputSpec(type="LATENT", tooltip="The denoised latent.")],
        python_module="nodes.sd.sampler_nodes",
    )

    def execute(self, ctx, *, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise) -> tuple[dict[str, Any]]:
        req = SamplingRequest(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                              denoise=denoise)
        return (sample(model, positive, negative, latent_image, req, progress=progress_reporter(ctx)),)


class KSamplerAdvanced(Node):
    SCHEMA = NodeSchema(
        node_type="KSamplerAdvanced", display_name="KSampler (Advanced)", category="sampling",
        description="KSampler with a step window and optional leftover noise, for base -> refiner hand-offs.",
        inputs=[
            InputSpec(name="model", type="MODEL"),
            ComboInput(name="add_noise", choices=["enable", "disable"]),
            *[i for i in _common_inputs("noise_seed")[1:]],
            IntInput(name="start_at_step", default=0, min=0, max=10000),
            IntInput(name="end_at_step", default=10000, min=0, max=10000),
            ComboInput(name="return_with_leftover_noise", choices=["disable", "enable"]),
        ],
        outputs=[OutputSpec(type="LATENT")],
        python_module="nodes.sd.sampler_nodes",
    )

    def execute(self, ctx, *, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, start_at_step, end_at_step, return_with_leftover_noise) -> tuple[dict[str, Any]]:
        req = SamplingRequest(seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                              add_noise=add_noise == "enable", start_step=start_at_step, last_step=end_at_step,
                              force_full_denoise=return_with_leftover_noise == "disable")
        return (sample(model, positive, negative, latent_image, req, progress=progress_reporter(ctx)),)


NODES = [KSampler, KSamplerAdvanced]
