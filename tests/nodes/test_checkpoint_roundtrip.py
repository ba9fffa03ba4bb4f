"""Each tiny original-layout checkpoint loads into modules that compute exactly what the source did."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from nodes.models import load_checkpoint

from .tiny_models import KINDS, ldm_state_dict, text_outputs, tiny_models, unet_output, vae_outputs

EXPECTED_KIND = {"sd2_v": "sd2"}
ENCODER_TYPES = {
    "sd1": [CLIPTextModel], "sd1_inpaint": [CLIPTextModel], "sd2": [CLIPTextModel], "sd2_v": [CLIPTextModel],
    "sdxl": [CLIPTextModel, CLIPTextModelWithProjection], "sdxl_refiner": [CLIPTextModelWithProjection],
}


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_matches_source_models(kind, tiny_file):
    ref = tiny_models(kind)
    loaded = load_checkpoint(tiny_file(kind))
    assert loaded.info.kind == EXPECTED_KIND.get(kind, kind)
    assert loaded.path == tiny_file(kind)
    assert isinstance(loaded.unet, UNet2DConditionModel) and isinstance(loaded.vae, AutoencoderKL)
    assert [type(m) for m in loaded.text_encoders] == ENCODER_TYPES[kind]
    assert loaded.unet.dtype == torch.float32 and not loaded.unet.training

    _close(unet_output(loaded.unet), unet_output(ref.unet))
    for got, want in zip(vae_outputs(loaded.vae), vae_outputs(ref.vae), strict=True):
        _close(got, want)
    assert loaded.vae.config.scaling_factor == ref.vae.config.scaling_factor
    for got_model, want_model in zip(loaded.text_encoders, ref.text_encoders, strict=True):
        got, want = text_outputs(got_model), text_outputs(want_model)
        assert got.keys() == want.keys()
        for name in want:
            _close(got[name], want[name])


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_fp16_file_loads_in_its_dtype_or_upcast(kind, tiny_file):
    path = tiny_file(kind, torch.float16)
    native = load_checkpoint(path)
    assert native.unet.dtype == torch.float16 and native.vae.dtype == torch.float16
    assert all(m.dtype == torch.float16 for m in native.text_encoders)

    upcast = load_checkpoint(path, dtype=torch.float32)
    ref = tiny_models(kind)
    rounded = UNet2DConditionModel(**ref.unet_config).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in ref.unet.state_dict().items()})
    assert upcast.unet.dtype == torch.float32
    _close(unet_output(upcast.unet), unet_output(rounded))
    # fp16 weights through fp32 math stay near the original fp32 model
    _close(unet_output(upcast.unet), unet_output(ref.unet), atol=5e-2)


def test_bf16_file_loads(tiny_file):
    loaded = load_checkpoint(tiny_file("sd1", torch.bfloat16), dtype=torch.float32)
    _close(unet_output(loaded.unet), unet_output(tiny_models("sd1").unet), atol=0.2)


def test_plain_tensor_dict_ckpt_loads(tiny_file, tmp_path):
    loaded = load_checkpoint(tiny_file("sd1", suffix=".ckpt"))
    assert loaded.info.kind == "sd1"
    _close(unet_output(loaded.unet), unet_output(tiny_models("sd1").unet))
    legacy = tmp_path / "legacy.pt"  # pre-zip torch serialisation, as old SD1 .ckpt files use
    torch.save(ldm_state_dict("sd1"), legacy, _use_new_zipfile_serialization=False)
    _close(unet_output(load_checkpoint(legacy).unet), unet_output(tiny_models("sd1").unet))


def test_dtype_and_device_arguments(tiny_file):
    loaded = load_checkpoint(tiny_file("sd2"), dtype=torch.float16, device="cpu")
    assert loaded.unet.dtype == torch.float16 and loaded.unet.device.type == "cpu"
    assert loaded.text_encoders[0].dtype == torch.float16
