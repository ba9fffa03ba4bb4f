"""InpaintModelConditioning and DifferentialDiffusion: ComfyUI's semantics, and what the sampler does with them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nodes.base.model_sampling import ModelSampling
from nodes.models.manager import ModelManager
from nodes.sampling.inpaint import DENOISE_MASK_FUNCTION, differential_mask
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sampling.schedules import schedule
from nodes.sd import inpaint_nodes
from nodes.sd.inpaint_nodes import DifferentialDiffusion, InpaintModelConditioning

MS = ModelSampling.discrete()


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(force_cpu=True)


def cond_for(model) -> list:
    width = model.unet.config.cross_attention_dim
    return [[torch.randn(1, 77, width, generator=torch.Generator().manual_seed(2)), {}]]


def test_outputs_follow_comfyui_formula(manager, tiny_file):
    _, _, vae = manager.load_checkpoint(tiny_file("sd1"))
    ds = vae.downscale
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 4 * ds + 3, 5 * ds + 2, 3, generator=gen)  # not a multiple of the VAE's factor
    mask = torch.zeros(1, pixels.shape[1], pixels.shape[2])
    mask[:, :, pixels.shape[2] // 2:] = 1.0
    mask[:, 0, 0] = 0.4  # soft values are rounded for the masked image, kept in the noise mask
    positive = [[torch.ones(1, 3, 8), {"strength": 0.5}]]
    negative = [[torch.zeros(1, 3, 8), {}]]
    pos, neg, latent = InpaintModelConditioning().execute(None, positive=positive, negative=negative, vae=vae,
                                                          pixels=pixels, mask=mask, noise_mask=True)
    h, w = (pixels.shape[1] // ds) * ds, (pixels.shape[2] // ds) * ds
    top, left = (pixels.shape[1] % ds) // 2, (pixels.shape[2] % ds) // 2
    crop = pixels[:, top:top + h, left:left + w]
    m = mask[:, None, top:top + h, left:left + w]
    greyed = (crop - 0.5) * (1 - m.round()).movedim(1, -1) + 0.5

    def encoded(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return vae.vae.encode(image.movedim(-1, 1) * 2 - 1).latent_dist.mode()

    assert torch.allclose(latent["samples"], encoded(crop), atol=1e-5)
    assert torch.equal(latent["noise_mask"], m)
    for out, original in ((pos, positive), (neg, negative)):
        (cond, opts), = out
        assert cond is original[0][0] and all(opts[k] == v for k, v in original[0][1].items())
        assert torch.allclose(opts["concat_latent_image"], encoded(greyed), atol=1e-5)
        assert torch.equal(opts["concat_mask"], m)
    _, _, no_mask = InpaintModelConditioning().execute(None, positive=positive, negative=negative, vae=vae,
                                                       pixels=pixels, mask=mask, noise_mask=False)
    assert "noise_mask" not in no_mask


def test_inpainting_unet_is_fed_the_conditioning_masked_image_and_mask(manager, tiny_file):
    model, _, vae = manager.load_checkpoint(tiny_file("sd1_inpaint"))
    assert model.in_channels == 9
    pixels = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1.0
    cond = cond_for(model)
    pos, neg, latent = InpaintModelConditioning().execute(None, positive=cond, negative=cond, vae=vae,
                                                          pixels=pixels, mask=mask, noise_mask=True)
    seen: list[torch.Tensor] = []
    hook = model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        out = sample(model, pos, neg, latent, SamplingRequest(seed=1, steps=2, cfg=5.0, sampler_name="euler",
                                                              scheduler="normal"))
    finally:
        hook.remove()
    assert len(seen) == 2 and out["samples"].shape == latent["samples"].shape
    h, w = latent["samples"].shape[-2:]
    expected_mask = F.interpolate(mask[:, None], size=(h, w), mode="bilinear", align_corners=False).round()
    expected_image = pos[0][1]["concat_latent_image"] * model.latent_format.scale_factor
    for x in seen:
        assert torch.equal(x[:1, 4:5], expected_mask)
        assert torch.allclose(x[:1, 5:], expected_image, atol=1e-5)
        assert not torch.allclose(x[:1, 5:], latent["samples"] * model.latent_format.scale_factor, atol=1e-3)


def test_plain_model_with_the_noise_mask_keeps_the_unmasked_area(manager, tiny_file):
    model, _, vae = manager.load_checkpoint(tiny_file("sd1"))
    pixels = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    cond = cond_for(model)
    pos, neg, latent = InpaintModelConditioning().execute(None, positive=cond, negative=cond, vae=vae,
                                                          pixels=pixels, mask=mask, noise_mask=True)
    out = sample(model, pos, neg, latent, SamplingRequest(seed=3, steps=3, cfg=5.0, sampler_name="euler",
                                                          scheduler="normal"))["samples"]
    half = out.shape[-1] // 2
    assert torch.allclose(out[..., : half - 1], latent["samples"][..., : half - 1], atol=1e-5)
    assert not torch.allclose(out[..., half + 1:], latent["samples"][..., half + 1:], atol=1e-2)


# ------------------------------------------------------------------------------------ differential diffusion


def nearest_timestep(sigma: float) -> int:
    """The training timestep whose sigma is nearest in log space (ComfyUI's discrete model sampling)."""
    table = np.log(MS.sigmas.double().numpy())
    return int(np.abs(np.log(sigma) - table).argmin())


def expected_threshold(sigma: float, sigmas: torch.Tensor) -> float:
    t_from = nearest_timestep(float(sigmas[0]))
    t_to = nearest_timestep(max(float(sigmas[-1]), float(MS.sigmas[0])))
    return (nearest_timestep(sigma) - t_to) / (t_from - t_to)


def test_differential_mask_is_the_soft_mask_thresholded_by_progress():
    sigmas = schedule(MS, "normal", 8)
    soft = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    extra = {"sampling": MS, "sigmas": sigmas}
    previous = None
    for sigma in sigmas[:-1]:
        got = differential_mask(sigma.reshape(1), soft, extra)
        assert torch.equal(got, (soft >= expected_threshold(float(sigma), sigmas)).float())
        assert previous is None or bool((got >= previous).all())  # the repainted area only grows
        previous = got
    first = differential_mask(sigmas[:1], soft, extra)
    last = differential_mask(sigmas[-2:-1], soft, extra)
    # Only mask = 1 takes part at the first step; at the last (sigma_min: threshold 0) every pixel does.
    assert first.sum() == 1 and last.sum() == 11
    assert not torch.equal(first, soft.round()) and not torch.equal(last, soft.round())
    blended = differential_mask(sigmas[3:4], soft, extra, strength=0.25)
    binary = differential_mask(sigmas[3:4], soft, extra)
    assert torch.allclose(blended, 0.25 * binary + 0.75 * soft)


def test_differential_diffusion_is_a_model_option_the_sampler_calls_every_step(manager, tiny_file):
    model, _, _ = manager.load_checkpoint(tiny_file("sd1"))
    (dd,) = DifferentialDiffusion().execute(None, model=model)
    assert dd.unet is model.unet and DENOISE_MASK_FUNCTION not in model.options  # a patch, not a copy
    calls: list[tuple[float, torch.Tensor]] = []
    inner = dd.options[DENOISE_MASK_FUNCTION]

    def spy(sigma, mask, extra):
        out = inner(sigma, mask, extra)
        calls.append((float(sigma[0]), out.clone()))
        return out

    spied = replace(dd, options={**dd.options, DENOISE_MASK_FUNCTION: spy})
    latent_pixels = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    ramp = torch.linspace(0, 1, 8).reshape(1, 1, 8).expand(1, 8, 8)  # soft mask, 0 on the left, 1 on the right
    latent = {"samples": latent_pixels, "noise_mask": ramp}
    cond = cond_for(model)
    req = SamplingRequest(seed=2, steps=5, cfg=4.0, sampler_name="euler", scheduler="normal")
    out = sample(spied, cond, cond, latent, req)["samples"]
    sigmas = schedule(MS, "normal", 5)
    assert [s for s, _ in calls] == pytest.approx([float(s) for s in sigmas[:-1]], rel=1e-6)
    for sigma, mask in calls:
        assert torch.equal(mask[0, 0], (ramp[0] >= expected_threshold(sigma, sigmas)).float())
    assert all(not mask[..., 0].any() for _, mask in calls[:-1])  # mask 0 is held until the last step
    assert not torch.equal(calls[0][1], calls[-2][1])
    plain = sample(model, cond, cond, latent, req)["samples"]
    assert not torch.allclose(out, plain, atol=1e-4)  # the soft mask alone gives another result


def test_schemas_match_comfyui():
    infos = {n.SCHEMA.node_type: n.SCHEMA.to_object_info() for n in inpaint_nodes.NODES}
    imc = infos["InpaintModelConditioning"]
    assert list(imc["input"]["required"]) == ["positive", "negative", "vae", "pixels", "mask", "noise_mask"]
    assert imc["output"] == ["CONDITIONING", "CONDITIONING", "LATENT"]
    assert imc["output_name"] == ["positive", "negative", "latent"]
    assert imc["input"]["required"]["noise_mask"][1]["default"] is True
    dd = infos["DifferentialDiffusion"]
    assert list(dd["input"]["required"]) == ["model"] and dd["output"] == ["MODEL"]
    assert dd["input"]["optional"]["strength"][1]["default"] == 1.0
