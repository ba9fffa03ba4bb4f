"""Tiny random Stable Diffusion models, saved in the ORIGINAL single-file key layouts.

The models and the writer live in ``nodes.models.random_checkpoint`` (the demo checkpoint and the
benchmarks use the same code); this module adds what only tests need: cached reference modules,
component files, diffusers folders and fixed probes for comparing outputs.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from nodes.models import random_checkpoint
from nodes.models.random_checkpoint import (  # noqa: F401  (re-exported for the tests)
    CLIP_L,
    KINDS,
    OPEN_CLIP_G,
    OPEN_CLIP_G_REFINER,
    OPEN_CLIP_H,
    SDXL_TIME_ID_WIDTH,
    TinyModels,
    cast,
    clip_to_ldm,
    open_clip_to_ldm,
    random_models,
    unet_config,
    unet_to_ldm,
    vae_config,
    vae_to_ldm,
    write_random_checkpoint,
)


@cache
def tiny_models(kind: str) -> TinyModels:
    """Deterministic reference modules for ``kind`` (one of ``KINDS``), in float32."""
    return random_models(kind, "tiny")


def ldm_state_dict(kind: str, models: TinyModels | None = None) -> dict[str, torch.Tensor]:
    """The whole tiny model of ``kind`` (or ``models``) as one original-layout state dict."""
    return random_checkpoint.ldm_state_dict(kind, models or tiny_models(kind))


def write_tiny_checkpoint(path: str | Path, kind: str = "sd1", dtype: torch.dtype = torch.float32) -> Path:
    """Save the tiny ``kind`` model as a single-file .safetensors (or .ckpt) in the original layout."""
    return write_random_checkpoint(path, kind, dtype, size="tiny")


def write_component(path: str | Path, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Path:
    """Save one component's original-layout state dict (e.g. ``vae_to_ldm(...)``) as .safetensors."""
    path = Path(path)
    save_file(cast({k: v.detach().clone().contiguous() for k, v in sd.items()}, dtype), str(path))
    return path


# --------------------------------------------------------------------------- fixed probes for comparisons

PROMPT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407, 49407, 49407]


@torch.no_grad()
def unet_output(unet: UNet2DConditionModel, seed: int = 0) -> torch.Tensor:
    """The UNet's prediction for a fixed random latent, timestep and context (float32)."""
    config = unet.config
    gen = torch.Generator().manual_seed(seed)
    dtype = unet.dtype
    sample = torch.randn(1, config.in_channels, 8, 8, generator=gen)
    context = torch.randn(1, 7, config.cross_attention_dim, generator=gen)
    extra = None
    if config.addition_embed_type == "text_time":
        adm = config.projection_class_embeddings_input_dim
        n_ids = 5 if adm - 5 * SDXL_TIME_ID_WIDTH == config.cross_attention_dim else 6  # refiner: 5 ids
        pooled = adm - n_ids * SDXL_TIME_ID_WIDTH
        extra = {"text_embeds": torch.randn(1, pooled, generator=gen).to(dtype),
                 "time_ids": (torch.rand(1, n_ids, generator=gen) * 1024).to(dtype)}
    out = unet(sample.to(dtype), torch.tensor([417]), encoder_hidden_states=context.to(dtype),
               added_cond_kwargs=extra).sample
    return out.float()


@torch.no_grad()
def vae_outputs(vae: AutoencoderKL, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoded image of a fixed latent, mean of the encoded fixed image), float32."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, vae.config.latent_channels, 4, 4, generator=gen).to(vae.dtype)
    image = (torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1).to(vae.dtype)
    return vae.decode(latent).sample.float(), vae.encode(image).latent_dist.mean.float()


@torch.no_grad()
def text_outputs(model: CLIPTextModel | CLIPTextModelWithProjection) -> dict[str, torch.Tensor]:
    """Last and penultimate hidden states (and the pooled projection when present), float32."""
    out = model(torch.tensor([PROMPT_IDS]), output_hidden_states=True)
    result = {"last": out.last_hidden_state.float(), "penultimate": out.hidden_states[-2].float()}
    if isinstance(model, CLIPTextModelWithProjection):
        result["pooled"] = out.text_embeds.float()
    return result


def write_diffusers_folder(path: str | Path, kind: str = "sdxl") -> Path:
    """Save the tiny ``kind`` model as a diffusers pipeline folder (model_index.json + subfolders)."""
    import json

    path = Path(path)
    models = tiny_models(kind)
    models.unet.save_pretrained(path / "unet")
    models.vae.save_pretrained(path / "vae")
    index: dict[str, Any] = {"_class_name": "StableDiffusionXLPipeline" if kind.startswith("sdxl")
                             else "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    names = ["text_encoder", "text_encoder_2"][: len(models.text_encoders)]
    if kind == "sdxl_refiner":
        names = ["text_encoder_2"]
    for name, model in zip(names, models.text_encoders, strict=True):
        model.save_pretrained(path / name)
        index[name] = ["transformers", type(model).__name__]
    (path / "scheduler").mkdir()
    prediction = "v_prediction" if kind == "sd2_v" else "epsilon"
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", "prediction_type": prediction, "num_train_timesteps": 1000}))
    (path / "model_index.json").write_text(json.dumps(index))
    return path


def add_component_files(engine: Any, tiny_file: Any, folder: Path) -> None:
    """Separate model files in an SdEngine's folders: an SDXL VAE (xl_vae), its two text encoders
    (clip_l, clip_g) and an SD1 U-Net (sd1_unet), as users download them; written under `folder`."""
    ref = tiny_models("sdxl")
    engine.add("vae", write_component(folder / "v.safetensors", vae_to_ldm(ref.vae.state_dict(), ref.vae_config)),
               "xl_vae.safetensors")
    engine.add("clip", write_component(folder / "l.safetensors", clip_to_ldm(ref.text_encoders[0])),
               "clip_l.safetensors")
    engine.add("text_encoders", write_component(folder / "g.safetensors", open_clip_to_ldm(ref.text_encoders[1])),
               "clip_g.safetensors")
    engine.add("unet", tiny_file("sd1"), "sd1_unet.safetensors")
