"""Random Stable Diffusion checkpoints in the ORIGINAL single-file key layouts.

One writer serves the tests (tiny models), the demo checkpoint (small: a 512×512 image in seconds on
a CPU) and the benchmarks (full: the real SD 1.5 / 2.x / XL architectures). The modules are built as
diffusers/transformers modules from a fixed seed and written out with our own diffusers→LDM key
mapping (the inverse of what the loader undoes). Full-size models are built on the meta device and
each tensor is drawn and written one at a time, so the weights are never all in memory at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .ldm_names import RESNET_NAMES, UNET_FIXED_NAMES
from .safetensors_out import write_safetensors

KINDS = ("sd1", "sd2", "sd2_v", "sd1_inpaint", "sdxl", "sdxl_refiner")
SIZES = ("tiny", "small", "full")
SDXL_TIME_ID_WIDTH = 256

# Text towers. Tiny and small models share the tiny ones (the text encoder is not where time goes).
CLIP_L = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "hidden_act": "quick_gelu"}
OPEN_CLIP_H = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "hidden_act": "gelu"}
OPEN_CLIP_G = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "hidden_act": "gelu",
               "projection_dim": 48}
# The refiner's OpenCLIP-G projects to its own width, as bigG does (1280 → 1280).
OPEN_CLIP_G_REFINER = {**OPEN_CLIP_G, "projection_dim": 64}
FULL_CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "hidden_act": "quick_gelu"}
FULL_OPEN_CLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "hidden_act": "gelu"}
FULL_OPEN_CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "hidden_act": "gelu",
                    "projection_dim": 1280}

CA, D, CU, U = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"


@dataclass(kw_only=True)
class TinyModels:
    """The reference modules one random checkpoint is made from."""

    kind: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[CLIPTextModel | CLIPTextModelWithProjection]
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]


def _check(kind: str, size: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")


def perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Make every weight distinct (default inits leave norms at 1/0, which would hide swaps)."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _text_config(spec: dict[str, Any], pad: int) -> CLIPTextConfig:
    heads = max(1, spec["hidden_size"] // 64)
    return CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, num_attention_heads=heads,
                          layer_norm_eps=1e-5, pad_token_id=pad, bos_token_id=49406, eos_token_id=49407,
                          **{"projection_dim": spec["hidden_size"], **spec})


def _text_specs(kind: str, size: str) -> list[tuple[type, dict[str, Any], int]]:
    """(class, tower config, pad id) of each text encoder of a kind."""
    full = size == "full"
    clip_l = FULL_CLIP_L if full else CLIP_L
    clip_h = FULL_OPEN_CLIP_H if full else OPEN_CLIP_H
    clip_g = FULL_OPEN_CLIP_G if full else OPEN_CLIP_G
    clip_g_refiner = FULL_OPEN_CLIP_G if full else OPEN_CLIP_G_REFINER
    if kind in ("sd1", "sd1_inpaint"):
        return [(CLIPTextModel, clip_l, 49407)]
    if kind in ("sd2", "sd2_v"):
        return [(CLIPTextModel, clip_h, 0)]
    if kind == "sdxl":
        return [(CLIPTextModel, clip_l, 49407), (CLIPTextModelWithProjection, clip_g, 0)]
    return [(CLIPTextModelWithProjection, clip_g_refiner, 0)]


def _context_width(kind: str, size: str) -> tuple[int, int]:
    """(cross-attention width, pooled width) the UNet of a kind expects from its text encoders."""
    specs = _text_specs(kind, size)
    cross = sum(spec["hidden_size"] for _, spec, _ in specs)
    last = specs[-1][1]
    return cross, int(last.get("projection_dim", last["hidden_size"]))


def unet_config(kind: str, size: str = "tiny") -> dict[str, Any]:
    """The diffusers config of each random UNet, as the detector should reconstruct it."""
    _check(kind, size)
    cross, pooled = _context_width(kind, size)
    in_channels = 9 if kind == "sd1_inpaint" else 4
    sdxl = kind.startswith("sdxl")
    if size == "full":
        if kind == "sdxl":
            config: dict[str, Any] = {"block_out_channels": [320, 640, 1280], "layers_per_block": 2,
                                      "down_block_types": [D, CA, CA], "up_block_types": [CU, CU, U],
                                      "attention_head_dim": [5, 10, 20], "transformer_layers_per_block": [1, 2, 10]}
        elif kind == "sdxl_refiner":
            config = {"block_out_channels": [384, 768, 1536, 1536], "layers_per_block": 2,
                      "down_block_types": [D, CA, CA, D], "up_block_types": [U, CU, CU, U],
                      "attention_head_dim": [6, 12, 24, 24], "transformer_layers_per_block": 4}
        else:
            config = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
                      "down_block_types": [CA, CA, CA, D], "up_block_types": [U, CU, CU, CU],
                      "attention_head_dim": 8 if kind.startswith("sd1") else [5, 10, 20, 20]}
        config["sample_size"] = 128 if sdxl else 64
    elif size == "small":  # attention only at the coarsest level (16×16 for 512×512): cheap on a CPU
        config = {"block_out_channels": [32, 32, 64], "layers_per_block": 1,
                  "down_block_types": [D, D, CA], "up_block_types": [CU, U, U],
                  "attention_head_dim": 8 if kind.startswith("sd1") else [1, 1, 1], "sample_size": 64}
    else:
        config = {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1,
                  "down_block_types": [D, CA] if kind == "sdxl" else [CA, D],
                  "up_block_types": [CU, U] if kind == "sdxl" else [U, CU],
                  "attention_head_dim": 8 if kind.startswith("sd1") else [1, 1]}
    config.update({"in_channels": in_channels, "out_channels": 4, "cross_attention_dim": cross,
                   "use_linear_projection": not kind.startswith("sd1")})
    if size != "full":
        config["transformer_layers_per_block"] = 2 if sdxl else 1
    if sdxl:
        n_ids = 5 if kind == "sdxl_refiner" else 6
        config.update({"addition_embed_type": "text_time", "addition_time_embed_dim": SDXL_TIME_ID_WIDTH,
                       "projection_class_embeddings_input_dim": pooled + n_ids * SDXL_TIME_ID_WIDTH})
    return config


def vae_config(kind: str, size: str = "tiny") -> dict[str, Any]:
    _check(kind, size)
    channels = {"tiny": [32, 64], "small": [32, 32, 32, 32], "full": [128, 256, 512, 512]}[size]
    return {"block_out_channels": channels, "layers_per_block": 2 if size == "full" else 1, "latent_channels": 4,
            "in_channels": 3, "out_channels": 3, "norm_num_groups": 32,
            "down_block_types": ["DownEncoderBlock2D"] * len(channels),
            "up_block_types": ["UpDecoderBlock2D"] * len(channels),
            "scaling_factor": 0.13025 if kind.startswith("sdxl") else 0.18215}


def _build(kind: str, size: str) -> TinyModels:
    u_config, v_config = unet_config(kind, size), vae_config(kind, size)
    unet = UNet2DConditionModel(**u_config).eval()
    vae = AutoencoderKL(**v_config).eval()
    encoders = [cls(_text_config(spec, pad)).eval() for cls, spec, pad in _text_specs(kind, size)]
    return TinyModels(kind=kind, unet=unet, vae=vae, text_encoders=encoders, unet_config=u_config,
                      vae_config=v_config)


def random_models(kind: str, size: str = "tiny", seed: int = 0, *, meta: bool | None = None) -> TinyModels:
    """Deterministic random modules (float32) for a kind and size.

    ``meta=True`` (the default for "full") builds them on the meta device: shapes only, no memory.
    """
    _check(kind, size)
    if meta if meta is not None else size == "full":
        with torch.device("meta"):
            return _build(kind, size)
    index = KINDS.index(kind)
    generator = torch.Generator().manual_seed(seed + index + 1234)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + index)
        models = _build(kind, size)
    for module in (models.unet, models.vae, *models.text_encoders):
        perturb(module, generator)
    with torch.no_grad():  # the SD2 v-prediction heuristic reads the spread of the last norm1 bias
        spread = 0.2 if kind == "sd2_v" else 0.02
        for name, param in models.unet.named_parameters():
            if name.startswith("up_blocks.") and name.endswith("transformer_blocks.0.norm1.bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * spread)
    return models


# --------------------------------------------------------------------------- diffusers → LDM keys

# diffusers -> LDM: the names a ControlNet shares, reversed, and the output head only a U-Net has.
_UNET_FIXED = {diffusers: ldm for ldm, diffusers in UNET_FIXED_NAMES.items()}
_UNET_FIXED |= {"conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str) -> str:
    for ldm, diffusers in RESNET_NAMES:
        if rest.startswith(diffusers + "."):
            return ldm + rest[len(diffusers):]
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
    """The whole model of ``kind`` (default: the tiny one) as one original-layout state dict.

    Modules on the meta device give meta tensors (shapes only), as full-size writing needs.
    """
    models = models or random_models(kind)
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


# --------------------------------------------------------------------------- writing

_V_BIAS = re.compile(r"model\.diffusion_model\.output_blocks\.\d+\.1\.transformer_blocks\.0\.norm1\.bias")


def _draw(name: str, meta: torch.Tensor, generator: torch.Generator, kind: str) -> torch.Tensor:
    """A random value for one full-size weight, scaled so activations stay finite in fp16."""
    shape = tuple(meta.shape)
    if not meta.is_floating_point():
        return torch.zeros(shape, dtype=meta.dtype)
    if kind == "sd2_v" and _V_BIAS.fullmatch(name):  # what the v-prediction heuristic looks for
        return torch.randn(shape, generator=generator) * 0.2
    if meta.ndim <= 1:
        return torch.ones(shape) if name.endswith("weight") and meta.ndim == 1 else torch.zeros(shape)
    if "embedding" in name:
        return torch.randn(shape, generator=generator) * 0.02
    fan_in = max(1, meta.numel() // shape[0])
    return torch.randn(shape, generator=generator) * fan_in**-0.5


def _save_safetensors(path: Path, sd: dict[str, torch.Tensor], make: Callable[[str, torch.Tensor], torch.Tensor],
                      dtype: torch.dtype) -> None:
    """Write a .safetensors file one tensor at a time (meta tensors are drawn by `make` just before)."""
    with path.open("wb") as handle:
        write_safetensors(handle, sd, metadata={"format": "pt"}, dtype=dtype, make=make)
        handle.flush()
        os.fsync(handle.fileno())


def write_random_checkpoint(path: str | Path, kind: str = "sd1", dtype: torch.dtype = torch.float32, seed: int = 0,
                            size: str = "tiny") -> Path:
    """Save a random ``kind`` model as one original-layout file (.safetensors, or .ckpt/.pt via torch.save).

    "tiny": the test models; "small": the demo model (a 512×512 image in seconds on a CPU);
    "full": the real architecture, for benchmarks (drawn and written tensor by tensor).
    """
    _check(kind, size)
    sd = ldm_state_dict(kind, random_models(kind, size, seed))
    return write_state_dict(path, sd, dtype=dtype, kind=kind, seed=seed)


def write_state_dict(path: str | Path, sd: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float32,
                     kind: str = "sd1", seed: int = 0) -> Path:
    """Save an original-layout state dict; meta tensors get random values, drawn one at a time as written."""
    path = Path(path)
    generator = torch.Generator().manual_seed(seed + KINDS.index(kind) + 4321)

    def make(name: str, meta: torch.Tensor) -> torch.Tensor:
        return _draw(name, meta, generator, kind)

    if path.suffix in (".safetensors", ".sft"):
        _save_safetensors(path, sd, make, dtype)
    else:
        full = {k: (make(k, v) if v.is_meta else v) for k, v in sd.items()}
        torch.save({"state_dict": cast(full, dtype), "global_step": 1}, path)
    return path


__all__ = ["KINDS", "SIZES", "TinyModels", "cast", "clip_to_ldm", "ldm_state_dict", "open_clip_to_ldm", "perturb",
           "random_models", "unet_config", "unet_to_ldm", "vae_config", "vae_to_ldm", "write_random_checkpoint",
           "write_state_dict"]
