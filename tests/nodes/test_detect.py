"""Architecture detection reads every config value from key names and shapes."""

from __future__ import annotations

import pytest
import torch

from nodes.base.errors import ModelLoadError
from nodes.models import detect_checkpoint, load_checkpoint, load_unet

from .tiny_models import (
    CLIP_L,
    KINDS,
    OPEN_CLIP_G,
    OPEN_CLIP_G_REFINER,
    OPEN_CLIP_H,
    ldm_state_dict,
    tiny_models,
    unet_to_ldm,
    write_component,
)

EXPECTED = {  # kind, prediction type, VAE scale, text encoders (name, spec, projection, pad, layer)
    "sd1": ("sd1", "epsilon", 0.18215, [("clip_l", CLIP_L, False, "sd1", -1)]),
    "sd1_inpaint": ("sd1_inpaint", "epsilon", 0.18215, [("clip_l", CLIP_L, False, "sd1", -1)]),
    "sd2": ("sd2", "epsilon", 0.18215, [("clip_h", OPEN_CLIP_H, False, "open_clip", -2)]),
    "sd2_v": ("sd2", "v_prediction", 0.18215, [("clip_h", OPEN_CLIP_H, False, "open_clip", -2)]),
    "sdxl": ("sdxl", "epsilon", 0.13025,
             [("clip_l", CLIP_L, False, "sd1", -2), ("clip_g", OPEN_CLIP_G, True, "open_clip", -2)]),
    "sdxl_refiner": ("sdxl_refiner", "epsilon", 0.13025, [("clip_g", OPEN_CLIP_G_REFINER, True, "open_clip", -2)]),
}


def _same(config: dict, expected: dict, skip: tuple[str, ...] = ("sample_size",)) -> None:
    for key, want in expected.items():
        if key in skip:
            continue
        got = config[key]
        got = list(got) if isinstance(got, tuple) else got
        assert got == want, f"{key}: {got} != {want}"


@pytest.mark.parametrize("kind", KINDS)
def test_detects_kind_and_every_config_value(kind):
    info = detect_checkpoint(ldm_state_dict(kind))
    want_kind, want_pred, want_scale, encoders = EXPECTED[kind]
    assert (info.kind, info.prediction_type, info.vae_scaling_factor) == (want_kind, want_pred, want_scale)
    models = tiny_models(kind)
    _same(info.unet_config, models.unet_config)
    _same(info.vae_config, models.vae_config)
    assert len(info.text_encoders) == len(encoders)
    for spec, (name, arch, projection, pad, layer) in zip(info.text_encoders, encoders, strict=True):
        assert (spec.name, spec.with_projection, spec.pad, spec.default_layer) == (name, projection, pad, layer)
        _same(spec.config, {**arch, "vocab_size": 49408, "max_position_embeddings": 77,
                            "num_attention_heads": max(1, arch["hidden_size"] // 64)})
        assert spec.config["pad_token_id"] == (0 if pad == "open_clip" else 49407)


def test_v_prediction_heuristic_and_override(tiny_file):
    assert detect_checkpoint(ldm_state_dict("sd2")).prediction_type == "epsilon"
    assert detect_checkpoint(ldm_state_dict("sd2_v")).prediction_type == "v_prediction"
    assert detect_checkpoint(ldm_state_dict("sd2_v"), prediction_type="epsilon").prediction_type == "epsilon"
    assert load_checkpoint(tiny_file("sd2"), prediction_type="v_prediction").info.prediction_type == "v_prediction"
    # SD1 never guesses v, whatever its biases look like
    assert detect_checkpoint(ldm_state_dict("sd1")).prediction_type == "epsilon"
    with pytest.raises(ValueError, match="prediction_type"):
        detect_checkpoint(ldm_state_dict("sd2"), prediction_type="sample")


def test_sdxl_v_pred_marker_key():
    sd = ldm_state_dict("sdxl")
    sd["v_pred"] = torch.tensor([])
    assert detect_checkpoint(sd).prediction_type == "v_prediction"


def test_real_sd2_heuristic_key_is_used():
    """Full-size SD2 files have output block 11; its norm1 bias decides, as documented."""
    sd = ldm_state_dict("sd2")
    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    from nodes.models.detect import _strip, _v_prediction_guess

    unet = _strip(sd, "model.diffusion_model.")
    unet[key.removeprefix("model.diffusion_model.")] = torch.randn(1280) * 0.2
    assert _v_prediction_guess(unet)
    unet[key.removeprefix("model.diffusion_model.")] = torch.randn(1280) * 0.01
    assert not _v_prediction_guess(unet)


@pytest.mark.parametrize("kind", ["sd1", "sd2_v", "sdxl", "sdxl_refiner", "sd1_inpaint"])
def test_bare_unet_file_is_detected(kind, tmp_path):
    models = tiny_models(kind)
    path = write_component(tmp_path / "unet.safetensors", unet_to_ldm(models.unet.state_dict(), models.unet_config))
    loaded = load_unet(path)
    assert loaded.info.kind == EXPECTED[kind][0] and loaded.vae is None and loaded.text_encoders == []
    assert loaded.info.prediction_type == EXPECTED[kind][1]
    _same(loaded.info.unet_config, models.unet_config)


def test_unknown_architecture_is_refused():
    sd1 = ldm_state_dict("sd1")
    foreign = {k: v for k, v in sd1.items() if not k.startswith("model.diffusion_model.")}
    foreign["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"] = torch.zeros(4, 4)
    with pytest.raises(ModelLoadError, match="expected key 'input_blocks.0.0.weight' in the UNet"):
        detect_checkpoint(foreign)
    with pytest.raises(ModelLoadError, match="expected a Stable Diffusion checkpoint"):
        detect_checkpoint({"transformer.h.0.attn.weight": torch.zeros(2)})
    six = dict(sd1)
    six["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 6, 3, 3)
    with pytest.raises(ModelLoadError, match="6 input channels; expected 4, or 9"):
        detect_checkpoint(six)


def test_mismatched_parts_are_refused():
    sd = {k: v for k, v in ldm_state_dict("sd1").items() if not k.startswith("cond_stage_model.")}
    sd |= {k: v for k, v in ldm_state_dict("sdxl").items() if k.startswith("conditioner.")}
    with pytest.raises(ModelLoadError, match="text encoders are sdxl but the UNet looks like sd1"):
        detect_checkpoint(sd)
