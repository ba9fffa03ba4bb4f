"""Full-size SD1 / SD2 / SDXL / refiner layouts (shapes only, on the meta device) detect and convert.

The weights never exist: the modules are built on ``meta``, so this checks the real configs and
every key mapping at full size for free.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from nodes.models import checkpoint_from_state_dict

from .tiny_models import TinyModels, ldm_state_dict

CA, D, CU, U = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"
SD_UNET = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
           "down_block_types": [CA, CA, CA, D], "up_block_types": [U, CU, CU, CU]}
REAL = {
    "sd1": {**SD_UNET, "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False},
    "sd2": {**SD_UNET, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True},
    "sdxl": {"block_out_channels": [320, 640, 1280], "layers_per_block": 2, "down_block_types": [D, CA, CA],
             "up_block_types": [CU, CU, U], "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
             "use_linear_projection": True, "transformer_layers_per_block": [1, 2, 10],
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816},
    "sdxl_refiner": {"block_out_channels": [384, 768, 1536, 1536], "layers_per_block": 2,
                     "down_block_types": [D, CA, CA, D], "up_block_types": [U, CU, CU, U],
                     "cross_attention_dim": 1280, "attention_head_dim": [6, 12, 24, 24],
                     "use_linear_projection": True, "transformer_layers_per_block": 4,
                     "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                     "projection_class_embeddings_input_dim": 2560},
}
VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
       "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "hidden_act": "quick_gelu", "projection_dim": 768}
CLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
          "hidden_act": "gelu", "projection_dim": 1024}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
          "hidden_act": "gelu", "projection_dim": 1280}
ENCODERS = {"sd1": [(CLIPTextModel, CLIP_L)], "sd2": [(CLIPTextModel, CLIP_H)],
            "sdxl": [(CLIPTextModel, CLIP_L), (CLIPTextModelWithProjection, CLIP_G)],
            "sdxl_refiner": [(CLIPTextModelWithProjection, CLIP_G)]}


def _meta_models(kind: str) -> TinyModels:
    with torch.device("meta"):
        unet = UNet2DConditionModel(**REAL[kind])
        vae = AutoencoderKL(**VAE)
        encoders = [cls(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **arch))
                    for cls, arch in ENCODERS[kind]]
    return TinyModels(kind=kind, unet=unet, vae=vae, text_encoders=encoders, unet_config=REAL[kind], vae_config=VAE)


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_full_size_layout_detects_and_converts(kind):
    sd = ldm_state_dict(kind, _meta_models(kind))
    loaded = checkpoint_from_state_dict(sd, device="meta", prediction_type="epsilon")
    info = loaded.info
    assert info.kind == kind
    for key, want in REAL[kind].items():
        got = info.unet_config.get(key, 1 if key == "transformer_layers_per_block" else None)
        assert (list(got) if isinstance(got, tuple) else got) == want, key
    for key, want in VAE.items():
        assert info.vae_config[key] == want, key
    for spec, (_cls, arch) in zip(info.text_encoders, ENCODERS[kind], strict=True):
        for key, want in arch.items():
            assert spec.config[key] == want, (spec.name, key)
    assert [type(m) for m in loaded.text_encoders] == [cls for cls, _ in ENCODERS[kind]]
    expected_params = sum(p.numel() for p in _meta_models(kind).unet.parameters())
    assert sum(p.numel() for p in loaded.unet.parameters()) == expected_params
