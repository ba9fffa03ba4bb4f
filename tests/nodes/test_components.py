"""Separate component files (VAE, UNet, text encoder) and diffusers folders load on their own."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from nodes.base.errors import ModelLoadError
from nodes.models import load_checkpoint, load_text_encoder, load_unet, load_vae

from .tiny_models import (
    clip_to_ldm,
    open_clip_to_ldm,
    text_outputs,
    tiny_models,
    unet_output,
    vae_outputs,
    vae_to_ldm,
    write_component,
    write_diffusers_folder,
)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _same_text(got_model, want_model) -> None:
    got, want = text_outputs(got_model), text_outputs(want_model)
    assert got.keys() == want.keys()
    for name in want:
        _close(got[name], want[name])


def test_bare_vae_file(tmp_path):
    ref = tiny_models("sd1")
    path = write_component(tmp_path / "vae.safetensors", vae_to_ldm(ref.vae.state_dict(), ref.vae_config),
                           torch.float16)
    vae = load_vae(path, dtype=torch.float32)
    assert vae.config.scaling_factor == 0.18215 and vae.dtype == torch.float32
    assert load_vae(path, scaling_factor=0.13025).config.scaling_factor == 0.13025
    want = tiny_models("sd1").vae
    rounded = type(want)(**ref.vae_config)
    rounded.load_state_dict({k: v.half().float() for k, v in want.state_dict().items()})
    for got, exp in zip(vae_outputs(vae), vae_outputs(rounded.eval()), strict=True):
        _close(got, exp)


def test_vae_from_full_checkpoint(tiny_file):
    vae = load_vae(tiny_file("sdxl"))
    assert vae.config.scaling_factor == 0.13025
    for got, want in zip(vae_outputs(vae), vae_outputs(tiny_models("sdxl").vae), strict=True):
        _close(got, want)


def test_diffusers_layout_vae_file(tmp_path):
    ref = tiny_models("sdxl").vae
    path = write_component(tmp_path / "diffusion_pytorch_model.safetensors", ref.state_dict())
    vae = load_vae(path, scaling_factor=0.13025)
    assert vae.config.scaling_factor == 0.13025
    for got, want in zip(vae_outputs(vae), vae_outputs(ref), strict=True):
        _close(got, want)
    old_names = {k.replace("to_q.", "query.").replace("to_out.0.", "proj_attn."): v
                 for k, v in ref.state_dict().items()}
    legacy = write_component(tmp_path / "old_diffusers_vae.safetensors", old_names)
    for got, want in zip(vae_outputs(load_vae(legacy)), vae_outputs(ref), strict=True):
        _close(got, want)


def test_unet_from_full_checkpoint(tiny_file):
    loaded = load_unet(tiny_file("sdxl"))
    assert loaded.info.kind == "sdxl" and loaded.vae is None
    _close(unet_output(loaded.unet), unet_output(tiny_models("sdxl").unet))


def test_bare_clip_l_file(tmp_path):
    ref = tiny_models("sd1").text_encoders[0]
    legacy = write_component(tmp_path / "clip_l.safetensors", clip_to_ldm(ref))
    flat = write_component(tmp_path / "clip_l_flat.safetensors", ref.state_dict())
    for path in (legacy, flat):
        loaded = load_text_encoder(path)
        assert loaded.spec.name == "clip_l" and loaded.spec.pad == "sd1" and isinstance(loaded.model, CLIPTextModel)
        _same_text(loaded.model, ref)


def test_bare_open_clip_g_file(tmp_path):
    ref = tiny_models("sdxl").text_encoders[1]
    path = write_component(tmp_path / "clip_g.safetensors", open_clip_to_ldm(ref))
    loaded = load_text_encoder(path)
    assert isinstance(loaded.model, CLIPTextModelWithProjection) and loaded.spec.pad == "open_clip"
    _same_text(loaded.model, ref)


def test_text_encoder_from_sdxl_checkpoint_needs_which(tiny_file):
    path = tiny_file("sdxl")
    with pytest.raises(ModelLoadError, match="holds 2 text encoders .*0=clip_l, 1=clip_g"):
        load_text_encoder(path)
    clip_g = load_text_encoder(path, which=1)
    assert clip_g.spec.name == "clip_g"
    _same_text(clip_g.model, tiny_models("sdxl").text_encoders[1])
    with pytest.raises(ModelLoadError, match="out of range"):
        load_text_encoder(path, which=2)


@pytest.mark.parametrize("kind", ["sdxl", "sd2_v"])
def test_diffusers_folder(kind, tmp_path):
    folder = write_diffusers_folder(tmp_path / kind, kind)
    loaded = load_checkpoint(folder)
    ref = tiny_models(kind)
    assert loaded.info.kind == kind.removesuffix("_v")
    assert loaded.info.prediction_type == ("v_prediction" if kind == "sd2_v" else "epsilon")
    assert loaded.info.vae_scaling_factor == ref.vae.config.scaling_factor
    _close(unet_output(loaded.unet), unet_output(ref.unet))
    for got, want in zip(vae_outputs(loaded.vae), vae_outputs(ref.vae), strict=True):
        _close(got, want)
    for got_model, want_model in zip(loaded.text_encoders, ref.text_encoders, strict=True):
        _same_text(got_model, want_model)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_checkpoint(tmp_path)
