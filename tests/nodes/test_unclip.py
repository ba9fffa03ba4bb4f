"""unCLIP on a tiny SD2 checkpoint with an image-embedding projection, an OpenCLIP image encoder and the
noise augmentor: loading, the class labels against the noise-augmentation formula, zeros for image-less
conditioning, strength 0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nodes.base.errors import ModelLoadError
from nodes.models.manager import ModelManager
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.clip_vision_nodes import CLIPVisionEncode
from nodes.sd.unclip_nodes import load_unclip_checkpoint, unCLIPConditioning

from .tiny_models import ldm_state_dict
from .tiny_vision import VISION, save, tiny_vision, vision_to_open_clip

LATENT = {"samples": torch.zeros(1, 4, 8, 8)}


def unclip_state() -> dict[str, torch.Tensor]:
    sd = ldm_state_dict("sd2")
    ted = sd["model.diffusion_model.time_embed.0.weight"].shape[0]
    adm = 2 * VISION["projection_dim"]
    gen = torch.Generator().manual_seed(0)
    p = "model.diffusion_model.label_emb.0."
    sd.update({f"{p}0.weight": torch.randn(ted, adm, generator=gen) * 0.1,
               f"{p}0.bias": torch.randn(ted, generator=gen),
               f"{p}2.weight": torch.randn(ted, ted, generator=gen) * 0.1,
               f"{p}2.bias": torch.randn(ted, generator=gen)})
    sd.update({f"embedder.model.{k}": v for k, v in vision_to_open_clip(tiny_vision()).items()})
    return sd


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = save(tmp_path_factory.mktemp("unclip") / "sd21-unclip-h.safetensors", unclip_state())
    return load_unclip_checkpoint(ModelManager(force_cpu=True), path)


@pytest.fixture(scope="module")
def conds(loaded):
    gen = torch.Generator().manual_seed(1)
    width = loaded[0].unet.config.cross_attention_dim
    return [[torch.randn(1, 7, width, generator=gen), {}]], [[torch.randn(1, 7, width, generator=gen), {}]]


def test_loader_returns_the_four_parts_with_their_weights(loaded):
    model, clip, vae, vision = loaded
    raw = unclip_state()
    assert model.kind == "sd2" and clip.kind == "sd2" and vae.vae is not None
    emb = model.unet.class_embedding
    assert torch.equal(emb.linear_1.weight, raw["model.diffusion_model.label_emb.0.0.weight"])
    assert torch.equal(emb.linear_2.bias, raw["model.diffusion_model.label_emb.0.2.bias"])
    ref = tiny_vision().state_dict()
    for key, value in vision.model.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_an_ordinary_checkpoint_is_refused(tmp_path, tiny_file):
    with pytest.raises(ModelLoadError, match="not an unCLIP checkpoint"):
        load_unclip_checkpoint(ModelManager(force_cpu=True), Path(tiny_file("sd2")))


def _labels_seen(model, positive, negative, cfg: float) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hook = model.unet.class_embedding.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        sample(model, positive, negative, LATENT, SamplingRequest(seed=1, steps=1, cfg=cfg, sampler_name="euler",
                                                                  scheduler="normal"))
    finally:
        hook.remove()
    return seen


def _sinusoid(level: int, dim: int) -> torch.Tensor:
    half = dim // 2
    args = level * torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    return torch.cat([torch.cos(args), torch.sin(args)]).float()


def test_class_labels_follow_the_noise_augmentation_formula(loaded, conds):
    model, _, _, vision = loaded
    image = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(2))
    (out,) = CLIPVisionEncode().execute(None, clip_vision=vision, image=image, crop="center")
    (positive,) = unCLIPConditioning().execute(None, conditioning=conds[0], clip_vision_output=out, strength=0.8,
                                               noise_augmentation=0.3)
    seen = _labels_seen(model, positive, conds[1], cfg=4.0)
    assert len(seen) == 2 and torch.equal(seen[1], torch.zeros_like(seen[1]))  # the negative side: zeros
    level = round(999 * 0.3)
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(1001)]
    alpha = math.prod(1 - min(1 - f[t + 1] / f[t], 0.999) for t in range(level + 1))
    noise = torch.randn(out.image_embeds.shape, generator=torch.Generator().manual_seed(0))
    noised = math.sqrt(alpha) * out.image_embeds + math.sqrt(1 - alpha) * noise
    dim = out.image_embeds.shape[1]
    expected = 0.8 * torch.cat([noised, _sinusoid(level, dim)[None]], dim=1)
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-5)


def test_strength_zero_changes_nothing_and_no_image_means_zero_labels(loaded, conds):
    model, _, _, vision = loaded
    (out,) = CLIPVisionEncode().execute(None, clip_vision=vision, image=torch.rand(1, 32, 32, 3), crop="none")
    (same,) = unCLIPConditioning().execute(None, conditioning=conds[0], clip_vision_output=out, strength=0.0,
                                           noise_augmentation=0.5)
    assert same is conds[0]
    seen = _labels_seen(model, conds[0], conds[1], cfg=1.0)
    assert seen and all(torch.equal(s, torch.zeros_like(s)) for s in seen)
