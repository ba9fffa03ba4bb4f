"""Guidance patches (RescaleCFG, PAG, SAG, PerpNeg, PerpNegGuider) and the model-sampling overrides.

Expected values come from the published formulas, written out here in float64, or from U-Net calls
made independently of the patch (a test processor for PAG's value-only attention).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models.model_patches import applied
from nodes.sampling import model_sampling
from nodes.sampling.guidance import Guider
from nodes.sampling.ksampler import GuiderSpec, NoiseSpec, SamplerChoice, SamplingRequest, run_sampling, sample
from nodes.sampling.schedules import schedule
from nodes.sd.guidance_patch_nodes import (
    PerpNeg,
    PerpNegGuider,
    PerturbedAttentionGuidance,
    RescaleCFG,
    RescaleCFGPatch,
    SelfAttentionGuidance,
    blur_where_attended,
    perp_neg,
)
from nodes.sd.model_sampling_nodes import ModelSamplingContinuousEDM, ModelSamplingContinuousV, ModelSamplingDiscrete


def run(model: ModelHandle, conds: tuple[list, list], **kw: Any) -> torch.Tensor:
    req = SamplingRequest(**{"seed": 3, "steps": 3, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", **kw})
    return sample(model, conds[0], conds[1], {"samples": torch.zeros(1, 4, 8, 8)}, req)["samples"]


def node(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)[0]


def guided(model: ModelHandle, conds: tuple[list, list], x: torch.Tensor, sigma: float, cfg: float = 5.0
           ) -> tuple[torch.Tensor, Guider]:
    """One guided x0 estimate with the model's patches installed, and the guider (to query sides)."""
    with torch.no_grad(), applied(model) as active:
        g = Guider(model, conds[0], conds[1], cfg, x=x, device=x.device, dtype=torch.float32, patches=active)
        return g(x, torch.tensor(sigma)), g


X = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * 3


# ------------------------------------------------------------------------------- RescaleCFG


def test_rescale_cfg_matches_the_published_formula():
    gen = torch.Generator().manual_seed(2)
    x, cond, uncond = (torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    s, cfg, phi = 2.5, 6.0, 0.7
    out = x - RescaleCFGPatch(phi).rescale({"cond": x - cond, "uncond": x - uncond, "cond_scale": cfg,
                                            "sigma": torch.tensor([s], dtype=torch.float64), "input": x})
    # v-prediction of each x0 estimate for the scaled input x / sqrt(s^2 + 1) (alpha = 1/sqrt(s^2+1))
    alpha = 1 / math.sqrt(s * s + 1)
    v_c, v_u = ((x * alpha**2 - x0) / (alpha * s) for x0 in (cond, uncond))
    v_cfg = v_u + cfg * (v_c - v_u)
    std = lambda t: t.std(dim=(1, 2, 3), keepdim=True)  # noqa: E731
    v_final = phi * v_cfg * std(v_c) / std(v_cfg) + (1 - phi) * v_cfg
    expected = x * alpha**2 - v_final * s * alpha
    assert torch.allclose(out, expected, atol=1e-10)


def test_rescale_cfg_zero_is_a_no_op_and_nonzero_changes_sampling(model, conds):
    base = run(model, conds)
    assert torch.equal(run(node(RescaleCFG, model=model, multiplier=0.0), conds), base)
    assert not torch.equal(run(node(RescaleCFG, model=model, multiplier=0.7), conds), base)
    assert torch.equal(run(model, conds), base)


# ------------------------------------------------------------------------------- PAG


class ValueOnly:
    """Self-attention replaced by its value projection (what PAG perturbs), written independently."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))


def test_pag_adds_the_distance_to_the_perturbed_prediction(model, conds, sd1):
    scale, sigma, cfg = 2.0, 3.0, 5.0
    pag = node(PerturbedAttentionGuidance, model=model, scale=scale)
    out, _ = guided(pag, conds, X, sigma, cfg)
    _, g = guided(model, conds, X, sigma, cfg)
    with torch.no_grad():
        cond, uncond = g.predict("positive", X, torch.tensor(sigma)), g.predict("negative", X, torch.tensor(sigma))
    original = dict(sd1.unet.attn_processors)
    swapped = {k: ValueOnly() if k.startswith("mid_block") and k.endswith("attn1.processor") else v
               for k, v in original.items()}
    sd1.unet.set_attn_processor(dict(swapped))
    try:
        with torch.no_grad():
            perturbed = g.predict("positive", X, torch.tensor(sigma))
    finally:
        sd1.unet.set_attn_processor(dict(original))
    expected = uncond + (cond - uncond) * cfg + (cond - perturbed) * scale
    assert not torch.allclose(perturbed, cond, atol=1e-3)
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_pag_and_sag_at_scale_zero_are_no_ops(model, conds):
    base = run(model, conds)
    assert torch.equal(run(node(PerturbedAttentionGuidance, model=model, scale=0.0), conds), base)
    assert torch.equal(run(node(SelfAttentionGuidance, model=model, scale=0.0, blur_sigma=2.0), conds), base)
    assert torch.equal(run(node(PerturbedAttentionGuidance, model=model, scale=0.0), conds, cfg=1.0),
                       run(model, conds, cfg=1.0))


def test_pag_guides_even_at_cfg_one(model, conds):
    assert not torch.equal(run(node(PerturbedAttentionGuidance, model=model, scale=3.0), conds, cfg=1.0),
                           run(model, conds, cfg=1.0))


# ------------------------------------------------------------------------------- SAG


def test_sag_blurs_only_where_attention_concentrates():
    x0 = torch.zeros(1, 1, 8, 8)
    x0[0, 0, ::2, ::2] = 1.0
    attn = torch.full((2, 4, 4), 0.25)  # 2 heads, 2x2 query and key positions, uniform attention
    attn[:, :, 0] = 1.0  # every query attends fully to key 0 (top-left quadrant): it receives 4 > 1
    attn[:, :, 1:] = 0.0
    out = blur_where_attended(x0, attn, 1.0)
    assert torch.equal(out[..., 4:, :], x0[..., 4:, :]) and torch.equal(out[..., :4, 4:], x0[..., :4, 4:])
    assert not torch.equal(out[..., :4, :4], x0[..., :4, :4])  # the top-left quadrant is blurred
    assert math.isclose(float(out[..., 1:3, 1:3].std()), 0.0, abs_tol=0.15)


def test_sag_changes_sampling_and_leaves_the_base(model, conds, sd1):
    base = run(model, conds)
    processors = dict(sd1.unet.attn_processors)
    assert not torch.equal(run(node(SelfAttentionGuidance, model=model, scale=0.5, blur_sigma=2.0), conds), base)
    assert dict(sd1.unet.attn_processors) == processors and torch.equal(run(model, conds), base)


# ------------------------------------------------------------------------------- Perp-Neg


def test_perp_neg_removes_only_the_orthogonal_part_of_the_negative():
    pos = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    neg = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    nocond = torch.zeros(1, 2, 1, 1)
    # neg = (its projection on pos: (1, 0)) + (orthogonal part: (0, 1)); only the latter is subtracted
    out = perp_neg(pos, neg, nocond, neg_scale=0.5, cond_scale=3.0)
    assert torch.allclose(out.flatten(), torch.tensor([3.0, -1.5]))
    shifted = perp_neg(pos + 2, neg + 2, nocond + 2, neg_scale=0.5, cond_scale=3.0)
    assert torch.allclose(shifted.flatten(), torch.tensor([5.0, 0.5]))


def test_perp_neg_patch_projects_the_negative_against_the_empty_prompt(model, conds):
    gen = torch.Generator().manual_seed(9)
    empty = [[torch.randn(1, 7, conds[0][0][0].shape[-1], generator=gen), {}]]
    out, g = guided(node(PerpNeg, model=model, empty_conditioning=empty, neg_scale=0.5), conds, X, 2.0, 4.0)
    with torch.no_grad():
        pos, neg, nocond = (g.predict(c, X, torch.tensor(2.0)).double() for c in ("positive", "negative", empty))
    p, n = (pos - nocond).flatten(), (neg - nocond).flatten()
    perp = n - (n @ p) / (p @ p) * p  # the part of the negative orthogonal to the positive
    expected = nocond.flatten() + 4.0 * (p - 0.5 * perp)
    assert abs(float(perp @ p)) < 1e-6 * float(p @ p)
    assert torch.allclose(out.double().flatten(), expected, rtol=1e-4, atol=1e-3)


def test_perp_neg_guider_with_an_empty_prompt_equal_to_the_negative_is_cfg(model, conds):
    sigmas = schedule(model.sampling, "normal", 3)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    common = {"noise": NoiseSpec(seed=3), "sampler": SamplerChoice(name="euler"), "sigmas": sigmas, "latent": latent}
    spec = node(PerpNegGuider, model=model, positive=conds[0], negative=conds[1], empty_conditioning=conds[1],
                cfg=6.0, neg_scale=1.0)
    # the negative minus the empty prompt is zero: nothing to project, Perp-Neg is plain CFG
    ours = run_sampling(guider=spec, **common)[0]["samples"]
    cfg = run_sampling(guider=GuiderSpec(model=model, positive=conds[0], negative=conds[1], cfg=6.0), **common)
    assert torch.allclose(ours, cfg[0]["samples"], rtol=1e-4, atol=1e-3)
    other = node(PerpNegGuider, model=model, positive=conds[0], negative=conds[1], empty_conditioning=conds[0],
                 cfg=6.0, neg_scale=1.0)
    assert not torch.allclose(run_sampling(guider=other, **common)[0]["samples"], ours, atol=1e-2)


def test_perp_neg_reports_a_missing_empty_prompt(model, conds):
    with pytest.raises(ValueError, match="PerpNegGuider: input 'empty_conditioning'"):
        node(PerpNegGuider, model=model, positive=conds[0], negative=conds[1], empty_conditioning=[], cfg=6.0,
             neg_scale=1.0)


# ------------------------------------------------------------------------------- model sampling


def _sd_alphas_bar() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def test_discrete_v_prediction_keeps_the_table_and_samples_like_a_v_model(model, conds):
    v = node(ModelSamplingDiscrete, model=model, sampling="v_prediction", zsnr=False)
    assert torch.equal(v.sampling.sigmas, model.sampling.sigmas) and v.unet is model.unet
    native = ModelHandle(unet=model.unet, kind="sd1", sampling=ModelSampling.discrete(prediction="v_prediction"),
                         latent_format=model.latent_format)
    assert torch.equal(run(v, conds), run(native, conds))
    eps = node(ModelSamplingDiscrete, model=model, sampling="eps", zsnr=False)
    assert torch.equal(run(eps, conds), run(model, conds))


def test_zsnr_rescales_the_table_to_zero_terminal_snr():
    table = node(ModelSamplingDiscrete, model=ModelHandle(unet=None, kind="sd1", sampling=ModelSampling.discrete(),
                                                          latent_format=LatentFormat(scale_factor=1.0)),
                 sampling="v_prediction", zsnr=True).sampling.sigmas
    root = _sd_alphas_bar().float().double().sqrt()  # the float32 table's sqrt(alpha_bar)
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    alphas_bar = root**2
    alphas_bar[-1] = 4.8973451890853435e-08
    expected = ((1 - alphas_bar) / alphas_bar).sqrt()
    assert torch.allclose(table.double(), expected, rtol=1e-4)
    last = 4.8973451890853435e-08
    assert math.isclose(float(table[-1]), math.sqrt((1 - last) / last), rel_tol=1e-5)


def test_lcm_uses_the_50_step_grid_and_the_consistency_boundary():
    ms = model_sampling.discrete("lcm")
    alphas_bar = _sd_alphas_bar()
    expected = ((1 - alphas_bar) / alphas_bar).sqrt()[19::20]
    assert len(ms.sigmas) == 50 and torch.allclose(ms.sigmas.double(), expected, rtol=1e-5)
    assert ms.timestep(ms.sigmas[[0, 10, 49]]).tolist() == [19, 219, 999]
    assert torch.allclose(ms.sigma(torch.tensor([219.0])), ms.sigmas[10:11])
    x, out, sigma = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 0.5), ms.sigmas[10:11]
    t = 2190.0  # timestep 219 x 10
    c_skip, c_out = 0.25 / (t * t + 0.25), t / math.sqrt(t * t + 0.25)
    expected_x0 = c_out * (2.0 - 0.5 * float(sigma)) + c_skip * 2.0
    assert math.isclose(float(ms.calculate_denoised(sigma, out, x)), expected_x0, rel_tol=1e-5)
    assert torch.equal(model_sampling.discrete("x0").calculate_denoised(sigma, out, x), out)


def test_continuous_samplings_follow_their_timestep_maps():
    base = ModelHandle(unet=None, kind="sdxl", sampling=ModelSampling.discrete(),
                       latent_format=LatentFormat(scale_factor=1))
    edm = node(ModelSamplingContinuousEDM, model=base, sampling="edm", sigma_max=120.0, sigma_min=0.002).sampling
    assert math.isclose(edm.sigma_min, 0.002, rel_tol=1e-5) and math.isclose(edm.sigma_max, 120.0, rel_tol=1e-5)
    assert math.isclose(float(edm.timestep(torch.tensor(4.0))), 0.25 * math.log(4.0), rel_tol=1e-6)
    x, out, s = torch.tensor(2.0), torch.tensor(1.0), torch.tensor(3.0)
    assert math.isclose(float(edm.calculate_denoised(s, out, x)), 2.0 * 0.25 / 9.25 + 3 * 0.5 / math.sqrt(9.25),
                        rel_tol=1e-6)
    v = node(ModelSamplingContinuousV, model=base, sampling="v_prediction", sigma_max=500.0, sigma_min=0.03).sampling
    assert math.isclose(float(v.timestep(torch.tensor(1.0))), 0.5, rel_tol=1e-6)
    assert math.isclose(float(v.sigma(torch.tensor(0.5))), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="ModelSamplingContinuousV: inputs 'sigma_min' and 'sigma_max'"):
        node(ModelSamplingContinuousV, model=base, sampling="v_prediction", sigma_max=0.01, sigma_min=0.03)


def test_playground_latents_are_standardised_per_channel():
    base = ModelHandle(unet=None, kind="sdxl", sampling=ModelSampling.discrete(),
                       latent_format=LatentFormat(scale_factor=0.13025))
    fmt = node(ModelSamplingContinuousEDM, model=base, sampling="edm_playground_v2.5", sigma_max=80.0,
               sigma_min=0.002).latent_format
    mean = torch.tensor([-1.6574, 1.886, -1.383, 2.5155]).view(1, 4, 1, 1)
    std = torch.tensor([8.4927, 5.9022, 6.5498, 5.2299]).view(1, 4, 1, 1)
    raw = mean + std * torch.arange(4.0).view(1, 4, 1, 1)  # channel c sits c standard deviations above its mean
    assert torch.allclose(fmt.process_in(raw), 0.5 * torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 1, 1))
    assert torch.allclose(fmt.process_out(fmt.process_in(raw)), raw, atol=1e-5)
    assert node(ModelSamplingContinuousEDM, model=base, sampling="edm", sigma_max=80.0,
                sigma_min=0.002).latent_format is base.latent_format
