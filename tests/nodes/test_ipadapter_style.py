"""The precise style/composition weight types at the layer level, and the style-and-composition nodes."""

from __future__ import annotations

import pytest
import torch

from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models import load_checkpoint
from nodes.models.clip_vision import ClipVisionHandle, build_clip_vision
from nodes.models.ipadapter import IPAdapterModel, IPAdapterPatch, build_ipadapter, layer_weights
from nodes.models.weights_file import read_state_dict
from nodes.sd.ipadapter_style_nodes import IPAdapterPreciseComposition, IPAdapterStyleComposition

from .tiny_vision import write_ipadapter, write_vision

HEADS, WIDTH, CONTEXT = 2, 8, 6


def _patch(weight_type: str, weight: float, weight_composition: float, sdxl: bool = False) -> IPAdapterPatch:
    gen = torch.Generator().manual_seed(0)
    kv = {"1.to_k_ip.weight": torch.randn(WIDTH, CONTEXT, generator=gen),
          "1.to_v_ip.weight": torch.randn(WIDTH, CONTEXT, generator=gen)}
    adapter = IPAdapterModel(projection=torch.nn.Identity(), kv=kv, plus=False)
    return IPAdapterPatch(adapter=adapter, cond=torch.randn(1, 4, CONTEXT, generator=gen),
                          uncond=torch.zeros(1, 4, CONTEXT), weight=weight, weight_type=weight_type, sdxl=sdxl,
                          sigma_start=1e9, sigma_end=0.0, weight_composition=weight_composition)


def _contribution(patch: IPAdapterPatch, t_idx: int) -> torch.Tensor | None:
    q = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(1))
    info = {"cond_or_uncond": [0, 1], "heads": HEADS, "block": ("input", 1)}
    return patch.contribution(q, info, ("layer", 1, t_idx, 16))


def test_composition_precise_feeds_other_blocks_the_image_only_as_the_negative():
    patch = _patch("composition precise", weight=0.5, weight_composition=1.0)
    style_block = _contribution(patch, 0)
    assert torch.equal(style_block[0], torch.zeros_like(style_block[0]))  # positive: empty image tokens
    assert style_block[1].abs().sum() > 0  # negative: the image's tokens
    composition_block = _contribution(patch, 5)
    assert composition_block[0].abs().sum() > 0 and torch.equal(composition_block[1],
                                                                 torch.zeros_like(composition_block[1]))


def test_style_transfer_precise_swaps_only_the_composition_blocks():
    patch = _patch("style transfer precise", weight=1.0, weight_composition=2.0)
    composition = _contribution(patch, 4)
    assert torch.equal(composition[0], torch.zeros_like(composition[0]))
    style = _contribution(patch, 0)
    assert style[0].abs().sum() > 0 and torch.equal(style[1], torch.zeros_like(style[1]))
    assert _contribution(patch, 7) is None  # SD1.5's index 7 takes no image in style transfer
    assert layer_weights(1.0, "strong style and composition", True, 0.25)[3] == 0.25


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> ClipVisionHandle:
    path = write_vision(tmp_path_factory.mktemp("vision") / "v.safetensors")
    return ClipVisionHandle(model=build_clip_vision(read_state_dict(path), path))


def test_style_composition_is_sdxl_only_and_zero_weights_give_the_model(tiny_file, vision, tmp_path):
    sd1 = load_checkpoint(tiny_file("sd1"))
    model = ModelHandle(unet=sd1.unet, kind="sd1", sampling=ModelSampling.discrete(),
                        latent_format=LatentFormat(scale_factor=0.18))
    path = write_ipadapter(tmp_path / "ipa_style.safetensors", sd1.unet)
    adapter = build_ipadapter(read_state_dict(path), path)
    image = torch.rand(1, 32, 32, 3)
    common = {"combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only",
              "clip_vision": vision}
    with pytest.raises(ValueError, match="'model' must be an SDXL model"):
        IPAdapterStyleComposition().execute(None, model=model, ipadapter=adapter, image_style=image,
                                            image_composition=image, weight_style=1.0, weight_composition=1.0,
                                            expand_style=False, **common)
    (same,) = IPAdapterPreciseComposition().execute(None, model=model, ipadapter=adapter, image=image, weight=0.0,
                                                    composition_boost=0.0, **common)
    assert same is model
    (patched,) = IPAdapterPreciseComposition().execute(None, model=model, ipadapter=adapter, image=image,
                                                       weight=1.0, composition_boost=0.0, **common)
    assert patched is not model and patched.patches[-1].weight_type == "composition precise"


def test_style_composition_gives_the_composition_block_its_own_image(tiny_file, vision, tmp_path):
    from nodes.sampling.ksampler import SamplingRequest, sample

    from .tiny_models import SDXL_TIME_ID_WIDTH

    xl = load_checkpoint(tiny_file("sdxl"))
    model = ModelHandle(unet=xl.unet, kind="sdxl", sampling=ModelSampling.discrete(),
                        latent_format=LatentFormat(scale_factor=0.13))
    path = write_ipadapter(tmp_path / "xl.safetensors", xl.unet)
    adapter = build_ipadapter(read_state_dict(path), path)
    gen = torch.Generator().manual_seed(0)
    pooled = xl.unet.config.projection_class_embeddings_input_dim - 6 * SDXL_TIME_ID_WIDTH
    width = xl.unet.config.cross_attention_dim
    conds = [[[torch.randn(1, 7, width, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}]]
             for _ in range(2)]
    req = SamplingRequest(seed=1, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def styled(composition: torch.Tensor) -> torch.Tensor:
        (m,) = IPAdapterStyleComposition().execute(
            None, model=model, ipadapter=adapter, image_style=torch.full((1, 32, 32, 3), 0.5),
            image_composition=composition, weight_style=1.0, weight_composition=1.0, expand_style=False,
            combine_embeds="average", start_at=0.0, end_at=1.0, embeds_scaling="V only", clip_vision=vision)
        return sample(m, conds[0], conds[1], latent, req)["samples"]

    a, b = styled(torch.zeros(1, 32, 32, 3)), styled(torch.ones(1, 32, 32, 3))
    assert not torch.equal(a, b)  # only the composition image differs: the composition block reads it
