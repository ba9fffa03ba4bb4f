"""Tiny random Stable Diffusion models, saved in the ORIGINAL single-file key layouts.

Each kind is built as diffusers/transformers modules from a fixed seed, every weight perturbed so
that swapped or misnamed tensors cannot go unnoticed, then written out with our own
diffusers→LDM key mapping (the inverse of what the loader must undo). Tests compare the loaded
modules with these reference modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

KINDS = ("sd1", "sd2", "sd2_v", "sd1_inpaint", "sdxl", "sdxl_refiner")
SDXL_TIME_ID_WIDTH = 256
CLIP_L = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "hidden_act": "quick_gelu"}
OPEN_CLIP_H = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "hidden_act": "gelu"}
OPEN_CLIP_G = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "hidden_act": "gelu",
               "projection_dim": 48}
# The refiner's OpenCLIP-G projects to its own width, as bigG does (1280 → 1280).
OPEN_CLIP_G_REFINER = {**OPEN_CLIP_G, "projection_dim": 64}


@dataclass(kw_only=True)
class TinyModels:
    """The reference modules one tiny checkpoint is made from."""

    kind: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[CLIPTextModel | CLIPTextModelWithProjection]
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Make every weight distinct (default inits leave norms at 1/0, which would hide swaps)."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _text_config(spec: dict[str, Any], pad: int) -> CLIPTextConfig:
    heads = max(1, spec["hidden_size"] // 64)
    return CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, num_attention_heads=heads,
                          layer_norm_eps=1e-5, pad_token_id=pad, bos_token_id=49406, eos_token_id=49407,
                          **{"projection_dim": spec["hidden_size"], **spec})


def unet_config(kind: str) -> dict[str, Any]:
    """The diffusers config of each tiny UNet, as the detector should reconstruct it."""
    base: dict[str, Any] = {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1,
                            "in_channels": 4, "out_channels": 4}
    if kind in ("sd1", "sd1_inpaint"):
        return {**base, "in_channels": 9 if kind == "sd1_inpaint" else 4,
                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "cross_attention_dim": CLIP_L["hidden_size"], "attention_head_dim": 8,
                "use_linear_projection": False, "transformer_layers_per_block": 1}
    if kind in ("sd2", "sd2_v"):
        return {**base, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "cross_attention_dim": OPEN_CLIP_H["hidden_size"], "attention_head_dim": [1, 1],
                "use_linear_projection": True, "transformer_layers_per_block": 1}
    if kind == "sdxl":
        pooled = OPEN_CLIP_G["projection_dim"]
        return {**base, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                "cross_attention_dim": CLIP_L["hidden_size"] + OPEN_CLIP_G["hidden_size"],
                "attention_head_dim": [1, 1], "use_linear_projection": True,
                "transformer_layers_per_block": 2, "addition_embed_type": "text_time",
                "addition_time_embed_dim": SDXL_TIME_ID_WIDTH,
                "projection_class_embeddings_input_dim": pooled + 6 * SDXL_TIME_ID_WIDTH}
    if kind == "sdxl_refiner":
        pooled = OPEN_CLIP_G_REFINER["projection_dim"]
        return {**base, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "cross_attention_dim": OPEN_CLIP_G["hidden_size"], "attention_head_dim": [1, 1],
                "use_linear_projection": True, "transformer_layers_per_block": 2,
                "addition_embed_type": "text_time", "addition_time_embed_dim": SDXL_TIME_ID_WIDTH,
                "projection_class_embeddings_input_dim": pooled + 5 * SDXL_TIME_ID_WIDTH}
    raise ValueError(f"unknown tiny kind {kind!r}")


def vae_config(kind: str) -> dict[str, Any]:
    return {"block_out_channels": [32, 64], "layers_per_block": 1, "latent_channels": 4,
            "in_channels": 3, "out_channels": 3, "norm_num_groups": 32,
            "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
            "scaling_factor": 0.13025 if kind.startswith("sdxl") else 0.18215}


@cache
def tiny_models(kind: str) -> TinyModels:
    """Deterministic reference modules for ``kind`` (one of ``KINDS``), in float32."""
    generator = torch.Generator().manual_seed(KINDS.index(kind) + 1234)
    torch.manual_seed(KINDS.index(kind))
    u_config, v_config = unet_config(kind), vae_config(kind)
    unet = UNet2DConditionModel(**u_config).eval()
    vae = AutoencoderKL(**v_config).eval()
    encoders: list[CLIPTextModel | CLIPTextModelWithProjection] = []
    if kind in ("sd1", "sd1_inpaint", "sdxl"):
        encoders.append(CLIPTextModel(_text_config(CLIP_L, 49407)).eval())
    if kind in ("sd2", "sd2_v"):
        encoders.append(CLIPTextModel(_text_config(OPEN_CLIP_H, 0)).eval())
    if kind == "sdxl":
        encoders.append(CLIPTextModelWithProjection(_text_config(OPEN_CLIP_G, 0)).eval())
    if kind == "sdxl_refiner":
        encoders.append(CLIPTextModelWithProjection(_text_config(OPEN_CLIP_G_REFINER, 0)).eval())
    for module in (unet, vae, *encoders):
        _perturb(module, generator)
    with torch.no_grad():  # the SD2 v-prediction heuristic reads the spread of the last norm1 bias
        spread = 0.2 if kind == "sd2_v" else 0.02
        for name, param in unet.named_parameters():
            if name.startswith("up_blocks.") and name.endswith("transformer_blocks.0.norm1.bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * spread)
    return TinyModels(kind=kind, unet=unet, vae=vae, text_encoders=encoders, unet_config=u_config,
                      vae_config=v_config)


# --------------------------------------------------------------------------- diffusers → LDM keys

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_to_ldm(sd: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Original ``openaimodel`` key names for a diffusers UNet state dict."""
    step = config["layers_per_block"] + 1
    up_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if module in _UNET_FIXED:
            out[f"{_UNET_FIXED[module]}.{leaf}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * step + int(m[2])}.0.{_resnet(m[3])}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * step + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * step + step - 1}.0.op.{m[2]}"] = value
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", key):
            out[f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"] = value
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            out[f"middle_block.1.{m[1]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(m[1]) * step + int(m[2])}.0.{_resnet(m[3])}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(m[1]) * step + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            slot = 2 if up_attention[int(m[1])] else 1
            out[f"output_blocks.{int(m[1]) * step + step - 1}.{slot}.conv.{m[2]}"] = value
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(sd: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Original ``autoencoder`` key names (attention as 1×1 convs) for a diffusers AutoencoderKL."""
    levels = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = key
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value[:, :, None, None]
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out[new] = value
    return out


def clip_to_ldm(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """transformers' older ``text_model.*`` layout, as SD1/SDXL files store CLIP-L (with position_ids)."""
    out = {"text_model." + k: v for k, v in model.state_dict().items()}
    positions = model.config.max_position_embeddings
    out["text_model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    return out


def open_clip_to_ldm(model: CLIPTextModel | CLIPTextModelWithProjection,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """OpenCLIP's text-tower names (fused qkv, ``resblocks``, transposed ``text_projection``)."""
    sd = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {"logit_scale": torch.tensor(4.6052)}
    renames = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
               ("self_attn.out_proj", "attn.out_proj"))
    for key, value in sd.items():
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", key):
            parts = [sd[f"encoder.layers.{m[1]}.self_attn.{p}_proj.{m[2]}"] for p in "qkv"]
            out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[2]}"] = torch.cat(parts)
        elif re.fullmatch(r"encoder\.layers\.\d+\.self_attn\.[kv]_proj\.(weight|bias)", key):
            continue
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            rest = m[2]
            for new, old in renames:
                rest = rest.replace(new, old)
            out[f"transformer.resblocks.{m[1]}.{rest}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for {key}")
    if "text_projection" not in out:  # SD2 files carry the projection although SD2 never uses it
        hidden = model.config.hidden_size
        gen = generator or torch.Generator().manual_seed(0)
        out["text_projection"] = torch.randn(hidden, hidden, generator=gen)
    return out


def _prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def ldm_state_dict(kind: str, models: TinyModels | None = None) -> dict[str, torch.Tensor]:
    """The whole tiny model of ``kind`` (or ``models``) as one original-layout state dict."""
    models = models or tiny_models(kind)
    sd = _prefixed("model.diffusion_model.", unet_to_ldm(models.unet.state_dict(), models.unet_config))
    sd |= _prefixed("first_stage_model.", vae_to_ldm(models.vae.state_dict(), models.vae_config))
    encoders = models.text_encoders
    if kind in ("sd1", "sd1_inpaint"):
        sd |= _prefixed("cond_stage_model.transformer.", clip_to_ldm(encoders[0]))
    elif kind in ("sd2", "sd2_v"):
        sd |= _prefixed("cond_stage_model.model.", open_clip_to_ldm(encoders[0]))
    elif kind == "sdxl":
        sd |= _prefixed("conditioner.embedders.0.transformer.", clip_to_ldm(encoders[0]))
        sd |= _prefixed("conditioner.embedders.1.model.", open_clip_to_ldm(encoders[1]))
    elif kind == "sdxl_refiner":
        sd |= _prefixed("conditioner.embedders.0.model.", open_clip_to_ldm(encoders[0]))
    # Real files also carry the noise schedule; loaders must ignore it.
    sd["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def cast(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def write_tiny_checkpoint(path: str | Path, kind: str = "sd1", dtype: torch.dtype = torch.float32) -> Path:
    """Save the tiny ``kind`` model as a single-file .safetensors (or .ckpt) in the original layout."""
    path = Path(path)
    sd = cast(ldm_state_dict(kind), dtype)
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "global_step": 1}, path)
    return path


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
