"""The KSampler loop on tiny real models: fidelity to diffusers, img2img, inpainting, batches, hand-offs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graph import Interrupted
from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models import load_checkpoint, load_clip_tokenizer
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sampling.schedules import schedule


def handle(ckpt, sampling: ModelSampling | None = None) -> ModelHandle:
    return ModelHandle(unet=ckpt.unet, kind=ckpt.info.kind,
                       sampling=sampling or ModelSampling.discrete(prediction=ckpt.info.prediction_type),
                       latent_format=LatentFormat(scale_factor=ckpt.info.vae_scaling_factor))


def embeddings(ckpt, *prompts):
    tok = load_clip_tokenizer()
    out = []
    for text in prompts:
        ids = tok(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            out.append(ckpt.text_encoders[0](ids).last_hidden_state)
    return out


def req(**kw) -> SamplingRequest:
    base = {"seed": 3, "steps": 6, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal"}
    return SamplingRequest(**{**base, **kw})


class FractionalTimesteps(ModelSampling):
    """diffusers feeds its U-Net the fractional timestep of each sigma; our convention rounds it."""

    def timestep(self, sigma):
        from diffusers import EulerDiscreteScheduler

        sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        log_sigmas = np.log(np.array(((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5))
        values = [float(sched._sigma_to_t(np.array(float(s)), log_sigmas)) for s in sigma.reshape(-1)]
        return torch.tensor(values).reshape(sigma.shape)


def diffusers_reference(ckpt, pipeline_cls: type, **components) -> tuple:
    """A diffusers pipeline on `ckpt`'s modules with the Euler scheduler, and where it must start to sample as
    `req()` does: (pipeline, our ModelSampling, our 6 "normal" sigmas, the seed-3 noise scaled for diffusers)."""
    from diffusers import EulerDiscreteScheduler

    pipe = pipeline_cls(
        vae=ckpt.vae, text_encoder=ckpt.text_encoders[0], tokenizer=load_clip_tokenizer(), unet=ckpt.unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False, **components)
    pipe.set_progress_bar_config(disable=True)
    ms = ModelSampling.discrete()
    sigmas = schedule(ms, "normal", 6)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    # Same sigmas; noise pre-scaled by sqrt(1 + sigma_max^2) (diffusers multiplies by sigma_max itself).
    latents = noise * math.sqrt(1 + float(sigmas[0]) ** 2) / float(sigmas[0])
    return pipe, ms, sigmas, latents


def test_euler_txt2img_matches_diffusers_pipeline(sd1):
    from diffusers import StableDiffusionPipeline

    pe, ne = embeddings(sd1, "a photo of a cat", "blurry")
    pipe, ms, sigmas, latents = diffusers_reference(sd1, StableDiffusionPipeline)
    theirs = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=6, guidance_scale=7.5,
                  sigmas=sigmas.tolist(), latents=latents, output_type="latent", height=64, width=64).images
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    model = handle(sd1, FractionalTimesteps(ms.sigmas, ms.log_sigmas, "epsilon"))
    ours = sample(model, [[pe, {}]], [[ne, {}]], empty, req())["samples"] * sd1.info.vae_scaling_factor
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) < 1e-4 * max(1.0, scale)
    # With our integer-timestep convention the result differs, but only slightly.
    rounded = sample(handle(sd1), [[pe, {}]], [[ne, {}]], empty, req())["samples"] * sd1.info.vae_scaling_factor
    assert 0 < float((rounded - theirs).abs().max()) < 0.01 * scale


def test_unet_gets_the_integer_timestep_nearest_in_log_sigma():
    ms = ModelSampling.discrete()
    assert int(ms.timestep(ms.sigmas[417])) == 417
    between = (ms.sigmas[100].log() * 0.3 + ms.sigmas[101].log() * 0.7).exp()
    assert int(ms.timestep(between)) == 101


def test_seed_batch_and_batch_index_reproduce_one_image_alone(sd1):
    pe, ne = embeddings(sd1, "a cat", "")
    model = handle(sd1)
    batch = sample(model, [[pe, {}]], [[ne, {}]], {"samples": torch.zeros(3, 4, 8, 8)}, req())["samples"]
    alone = sample(model, [[pe, {}]], [[ne, {}]], {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [2]},
                   req())["samples"]
    # Equal up to float rounding of batched vs single matrix products (the tiny model's values reach ~100).
    assert float((batch[2:3] - alone).abs().max()) < 1e-4 * float(alone.abs().max())
    again = sample(model, [[pe, {}]], [[ne, {}]], {"samples": torch.zeros(3, 4, 8, 8)}, req())["samples"]
    other = sample(model, [[pe, {}]], [[ne, {}]], {"samples": torch.zeros(3, 4, 8, 8)}, req(seed=4))["samples"]
    assert torch.equal(batch, again) and not torch.allclose(batch, other)


def test_img2img_denoise_starts_from_the_input(sd1):
    pe, ne = embeddings(sd1, "a cat", "")
    model = handle(sd1)
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    weak = sample(model, [[pe, {}]], [[ne, {}]], {"samples": source}, req(denoise=0.05, steps=4))["samples"]
    strong = sample(model, [[pe, {}]], [[ne, {}]], {"samples": source}, req(denoise=1.0, steps=4))["samples"]
    assert (weak - source).abs().mean() < (strong - source).abs().mean() / 4
    sigmas = schedule(model.sampling, "normal", 10, denoise=0.5)
    assert len(sigmas) == 11 and torch.allclose(sigmas, schedule(model.sampling, "normal", 20)[-11:])


def test_noise_mask_keeps_the_unmasked_region(sd1):
    pe, ne = embeddings(sd1, "a cat", "")
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # repaint the right half (pixel-sized mask, as VAEEncodeForInpaint gives)
    out = sample(handle(sd1), [[pe, {}]], [[ne, {}]], {"samples": source, "noise_mask": mask}, req())["samples"]
    assert torch.allclose(out[..., :4], source[..., :4], atol=1e-5)
    assert not torch.allclose(out[..., 4:], source[..., 4:], atol=1e-2)


def test_advanced_split_with_leftover_noise_equals_one_run(sd1):
    pe, ne = embeddings(sd1, "a cat", "")
    model = handle(sd1)
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    full = sample(model, [[pe, {}]], [[ne, {}]], empty, req(steps=8))["samples"]
    first = sample(model, [[pe, {}]], [[ne, {}]], empty,
                   req(steps=8, start_step=0, last_step=5, force_full_denoise=False))
    second = sample(model, [[pe, {}]], [[ne, {}]], first,
                    req(steps=8, add_noise=False, start_step=5, last_step=10000, force_full_denoise=True))
    assert float((second["samples"] - full).abs().max()) < 1e-4 * float(full.abs().max())
    unchanged = sample(model, [[pe, {}]], [[ne, {}]], empty, req(steps=8, start_step=8, last_step=8))
    assert torch.equal(unchanged["samples"], empty["samples"])


def test_progress_every_step_and_interrupt_within_one(sd1):
    pe, ne = embeddings(sd1, "a cat", "")
    seen = []

    def progress(step, total, preview):
        seen.append((step, total))
        image = preview()
        assert image.size == (8, 8) and image.mode == "RGB"
        if step == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        sample(handle(sd1), [[pe, {}]], [[ne, {}]], {"samples": torch.zeros(1, 4, 8, 8)}, req(steps=6),
               progress=progress)
    assert seen == [(1, 6), (2, 6)]


@pytest.mark.parametrize("kind", ["sd2_v", "sd1_inpaint", "sdxl", "sdxl_refiner"])
def test_every_model_kind_samples(tiny_file, kind):
    ckpt = load_checkpoint(tiny_file(kind))
    model = handle(ckpt)
    width = model.unet.config.cross_attention_dim
    cond = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(1))
    opts = {}
    if model.is_sdxl:
        pooled_dim = model.unet.config.projection_class_embeddings_input_dim - (
            6 if kind == "sdxl" else 5) * model.unet.config.addition_time_embed_dim
        opts = {"pooled_output": torch.randn(1, pooled_dim)}
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    if kind == "sd1_inpaint":
        latent["noise_mask"] = torch.ones(1, 64, 64)
    out = sample(model, [[cond, opts]], [[cond * 0, opts]], latent, req(steps=3, sampler_name="dpmpp_2m"))
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert model.sampling.prediction == ("v_prediction" if kind == "sd2_v" else "epsilon")
