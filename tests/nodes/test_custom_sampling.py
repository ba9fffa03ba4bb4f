"""The composable sampler nodes: schemas as ComfyUI names them, and one shared sampling run.

KSampler is the composition of KSamplerSelect + BasicScheduler + RandomNoise + CFGGuider, so the
custom nodes must reproduce its latents bit for bit; KSamplerAdvanced's hand-off equals SplitSigmas.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from graph.builder import GraphBuilder
from nodes.base.model_sampling import ModelSampling
from nodes.sd import custom_sampling
from tests.support.keep import kept_values

from .test_lora import SdEngine

MS = ModelSampling.discrete()


@pytest.fixture
def engine(tmp_path, tiny_file) -> SdEngine:
    e = SdEngine(tmp_path)
    e.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    return e


def _base(g: GraphBuilder, size: int = 32) -> tuple[Any, Any, Any, Any]:
    loader = g.node("CheckpointLoaderSimple", ckpt_name="sd1.safetensors")
    pos = g.node("CLIPTextEncode", text="a red fox", clip=loader[1])
    neg = g.node("CLIPTextEncode", text="blurry", clip=loader[1])
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=2)
    return loader, pos, neg, latent


@pytest.mark.parametrize("sampler, scheduler, denoise", [("euler_ancestral", "karras", 1.0),
                                                         ("dpmpp_2m_sde", "normal", 0.7)])
def test_sampler_custom_equals_ksampler_bit_for_bit(engine, sampler, scheduler, denoise):
    g = GraphBuilder()
    loader, pos, neg, latent = _base(g)
    ks = g.node("KSampler", seed=42, steps=4, cfg=6.5, sampler_name=sampler, scheduler=scheduler, denoise=denoise,
                model=loader[0], positive=pos, negative=neg, latent_image=latent)
    select = g.node("KSamplerSelect", sampler_name=sampler)
    sigmas = g.node("BasicScheduler", model=loader[0], scheduler=scheduler, steps=4, denoise=denoise)
    custom = g.node("SamplerCustom", model=loader[0], add_noise=True, noise_seed=42, cfg=6.5, positive=pos,
                    negative=neg, sampler=select, sigmas=sigmas, latent_image=latent)
    advanced = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=42),
                      guider=g.node("CFGGuider", model=loader[0], positive=pos, negative=neg, cfg=6.5),
                      sampler=select, sigmas=sigmas, latent_image=latent)
    for ref in (ks, custom[0], advanced[0], custom[1]):
        g.node("Keep", value=ref)
    reference, from_custom, from_advanced, denoised = kept_values(engine, g)
    assert torch.equal(reference["samples"], from_custom["samples"])
    assert torch.equal(reference["samples"], from_advanced["samples"])
    assert denoised["samples"].shape == reference["samples"].shape


def test_ksampler_advanced_hand_off_equals_split_sigmas(engine):
    g = GraphBuilder()
    loader, pos, neg, latent = _base(g)
    first = g.node("KSamplerAdvanced", add_noise="enable", noise_seed=9, steps=6, cfg=5.0, sampler_name="euler",
                   scheduler="karras", positive=pos, negative=neg, latent_image=latent, start_at_step=0,
                   end_at_step=2, return_with_leftover_noise="enable", model=loader[0])
    second = g.node("KSamplerAdvanced", add_noise="disable", noise_seed=9, steps=6, cfg=5.0, sampler_name="euler",
                    scheduler="karras", positive=pos, negative=neg, latent_image=first, start_at_step=2,
                    end_at_step=10000, return_with_leftover_noise="disable", model=loader[0])
    split = g.node("SplitSigmas", sigmas=g.node("BasicScheduler", model=loader[0], scheduler="karras", steps=6,
                                                denoise=1.0), step=2)
    guider = g.node("CFGGuider", model=loader[0], positive=pos, negative=neg, cfg=5.0)
    select = g.node("KSamplerSelect", sampler_name="euler")
    high = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=9), guider=guider, sampler=select,
                  sigmas=split[0], latent_image=latent)
    low = g.node("SamplerCustomAdvanced", noise=g.node("DisableNoise"), guider=guider, sampler=select,
                 sigmas=split[1], latent_image=high[0])
    for ref in (first, high[0], second, low[0]):
        g.node("Keep", value=ref)
    first_k, high_c, second_k, low_c = kept_values(engine, g)
    assert torch.equal(first_k["samples"], high_c["samples"])
    assert torch.equal(second_k["samples"], low_c["samples"])


def test_basic_guider_is_cfg_one(engine):
    g = GraphBuilder()
    loader, pos, neg, latent = _base(g)
    select = g.node("KSamplerSelect", sampler_name="heun")
    sigmas = g.node("KarrasScheduler", steps=3, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0)
    noise = g.node("RandomNoise", noise_seed=1)
    basic = g.node("SamplerCustomAdvanced", noise=noise, guider=g.node("BasicGuider", model=loader[0],
                                                                       conditioning=pos),
                   sampler=select, sigmas=sigmas, latent_image=latent)
    cfg1 = g.node("SamplerCustom", model=loader[0], add_noise=True, noise_seed=1, cfg=1.0, positive=pos,
                  negative=neg, sampler=select, sigmas=sigmas, latent_image=latent)
    g.node("Keep", value=basic[0])
    g.node("Keep", value=cfg1[0])
    a, b = kept_values(engine, g)
    assert torch.equal(a["samples"], b["samples"])


def _execute(node: type, **inputs: Any) -> tuple[Any, ...]:
    return node().execute(None, **inputs)


class _Model:
    sampling = MS


def test_schedulers_follow_their_formulas():
    (k,) = _execute(custom_sampling.KarrasScheduler, steps=5, sigma_max=10.0, sigma_min=0.1, rho=7.0)
    ramp = [i / 4 for i in range(5)]
    expected = [(10.0 ** (1 / 7) + r * (0.1 ** (1 / 7) - 10.0 ** (1 / 7))) ** 7 for r in ramp] + [0.0]
    assert torch.allclose(k, torch.tensor(expected), rtol=1e-6) and k.dtype == torch.float32
    (e,) = _execute(custom_sampling.ExponentialScheduler, steps=4, sigma_max=8.0, sigma_min=0.5)
    assert torch.allclose(e, torch.tensor([8.0, 8.0 * (1 / 16) ** (1 / 3), 8.0 * (1 / 16) ** (2 / 3), 0.5, 0.0]))
    (turbo,) = _execute(custom_sampling.SDTurboScheduler, model=_Model(), steps=1, denoise=1.0)
    assert torch.allclose(turbo, torch.stack([MS.sigmas[999], torch.tensor(0.0)]))
    (turbo4,) = _execute(custom_sampling.SDTurboScheduler, model=_Model(), steps=3, denoise=0.5)
    assert torch.allclose(turbo4[:-1], MS.sigmas[[499, 399, 299]]) and turbo4[-1] == 0
    (basic,) = _execute(custom_sampling.BasicScheduler, model=_Model(), scheduler="normal", steps=4, denoise=0.5)
    (full,) = _execute(custom_sampling.BasicScheduler, model=_Model(), scheduler="normal", steps=8, denoise=1.0)
    assert torch.equal(basic, full[-5:])  # denoise keeps the tail of a longer schedule
    (empty,) = _execute(custom_sampling.BasicScheduler, model=_Model(), scheduler="normal", steps=4, denoise=0.0)
    assert len(empty) == 0
    high, low = _execute(custom_sampling.SplitSigmas, sigmas=full, step=3)
    assert torch.equal(high, full[:4]) and torch.equal(low, full[3:])
    assert math.isclose(float(high[-1]), float(low[0]))


def test_noise_values_follow_the_seed_conventions():
    (noise,) = _execute(custom_sampling.RandomNoise, noise_seed=5)
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    expected = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noise.generate_noise(latent), expected)
    (off,) = _execute(custom_sampling.DisableNoise)
    assert not off.generate_noise(latent).any() and off.seed == 0


COMFY_INPUTS = {
    "KSamplerSelect": ["sampler_name"],
    "BasicScheduler": ["model", "scheduler", "steps", "denoise"],
    "KarrasScheduler": ["steps", "sigma_max", "sigma_min", "rho"],
    "ExponentialScheduler": ["steps", "sigma_max", "sigma_min"],
    "SDTurboScheduler": ["model", "steps", "denoise"],
    "AlignYourStepsScheduler": ["model_type", "steps", "denoise"],
    "GITSScheduler": ["coeff", "steps", "denoise"],
    "PolyexponentialScheduler": ["steps", "sigma_max", "sigma_min", "rho"],
    "VPScheduler": ["steps", "beta_d", "beta_min", "eps_s"],
    "SplitSigmas": ["sigmas", "step"],
    "RandomNoise": ["noise_seed"],
    "DisableNoise": [],
    "CFGGuider": ["model", "positive", "negative", "cfg"],
    "BasicGuider": ["model", "conditioning"],
    "SamplerCustom": ["model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas",
                      "latent_image"],
    "SamplerCustomAdvanced": ["noise", "guider", "sampler", "sigmas", "latent_image"],
}
COMFY_OUTPUTS = {"KSamplerSelect": ["SAMPLER"], "SplitSigmas": ["SIGMAS", "SIGMAS"], "RandomNoise": ["NOISE"],
                 "DisableNoise": ["NOISE"], "CFGGuider": ["GUIDER"], "BasicGuider": ["GUIDER"],
                 "SamplerCustom": ["LATENT", "LATENT"], "SamplerCustomAdvanced": ["LATENT", "LATENT"]}


def test_schemas_match_comfyui():
    by_id = {n.SCHEMA.node_type: n for n in custom_sampling.NODES}
    assert set(by_id) == set(COMFY_INPUTS)
    for node_id, inputs in COMFY_INPUTS.items():
        info = by_id[node_id].SCHEMA.to_object_info()
        assert list(info["input"]["required"]) == inputs, node_id
        assert info["output"] == COMFY_OUTPUTS.get(node_id, ["SIGMAS"]), node_id
    custom = by_id["SamplerCustom"].SCHEMA.to_object_info()
    assert custom["output_name"] == ["output", "denoised_output"]
    assert custom["input"]["required"]["add_noise"][1]["default"] is True
    assert custom["input"]["required"]["cfg"][1]["default"] == 8.0
    split = by_id["SplitSigmas"].SCHEMA.to_object_info()
    assert split["output_name"] == ["high_sigmas", "low_sigmas"]
    karras = by_id["KarrasScheduler"].SCHEMA.to_object_info()["input"]["required"]
    assert karras["sigma_max"][1]["default"] == 14.614642 and karras["sigma_min"][1]["default"] == 0.0291675
