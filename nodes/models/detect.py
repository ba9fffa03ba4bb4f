"""Recognise a Stable Diffusion state dict in the original single-file layout.

Everything is read from key names and tensor shapes, never from widths alone (diffusers' own guess
calls a narrow SD2 file "v1"), so a model of any channel width gets a config that fits it exactly.
Shapes do not carry head counts, activations or the latent scale; those follow each family's
convention (SD1: 8 heads; SD2/SDXL: heads of 64 channels; OpenAI CLIP: quick_gelu; OpenCLIP: gelu).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nodes.base.errors import ModelLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."

SD_VAE_SCALE = 0.18215
SDXL_VAE_SCALE = 0.13025
SDXL_TIME_ID_WIDTH = 256  # width of each SDXL size/crop/score embedding ("addition_time_embed_dim")
V_PREDICTION_STD_THRESHOLD = 0.09

Kind = Literal["sd1", "sd2", "sd1_inpaint", "sd2_inpaint", "sdxl", "sdxl_inpaint", "sdxl_refiner"]
PredictionType = Literal["epsilon", "v_prediction"]
PREDICTION_TYPES = ("epsilon", "v_prediction")

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class TextEncoderSpec:
    """One text encoder found in a file, and how to build and use it."""

    name: Literal["clip_l", "clip_h", "clip_g"]
    prefix: str  # key prefix inside the file ("" for a bare text-encoder file)
    layout: Literal["transformers", "open_clip"]
    config: dict[str, Any]  # keyword arguments for transformers.CLIPTextConfig
    with_projection: bool  # build CLIPTextModelWithProjection (SDXL's OpenCLIP-G needs the pooled output)
    pad: Literal["sd1", "open_clip"]  # tokenizer padding: 49407 (sd1) or 0 (open_clip)
    default_layer: int  # hidden state the family conditions on: -1 last, -2 penultimate


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What a file holds: architecture, prediction type, latent scale and exact diffusers configs."""

    kind: Kind
    prediction_type: PredictionType
    vae_scaling_factor: float
    unet_config: dict[str, Any] | None = None
    vae_config: dict[str, Any] | None = None
    text_encoders: tuple[TextEncoderSpec, ...] = field(default_factory=tuple)

    @property
    def is_sdxl(self) -> bool:
        return self.kind.startswith("sdxl")


def _strip(sd: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _has_prefix(sd: StateDict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def _indices(keys: Any, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) over ``keys``."""
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := regex.match(k))}
    return sorted(found)


def _need(sd: Mapping[str, torch.Tensor], key: str, path: Path | None, what: str) -> torch.Tensor:
    if key not in sd:
        raise ModelLoadError(path, f"expected key {key!r} in the {what}, it is missing")
    return sd[key]


def _heads(width: int, *, fixed: int | None = None) -> int:
    """Head count for an attention layer of ``width`` channels that always divides it."""
    target = fixed if fixed is not None else max(1, width // 64)
    target = min(target, width)
    while width % target:
        target -= 1
    return target


# --------------------------------------------------------------------------- UNet


def unet_config_from_ldm(unet: StateDict, *, family: str, path: Path | None = None) -> dict[str, Any]:
    """diffusers ``UNet2DConditionModel`` config for an LDM-layout UNet (keys without prefix).

    ``family`` is "sd1", "sd2" or "sdxl"; it decides only what shapes cannot say (head counts).
    """
    what = "UNet"
    conv_in = _need(unet, "input_blocks.0.0.weight", path, what)
    model_channels, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
    out_channels = int(_need(unet, "out.2.weight", path, what).shape[0])
    time_embed_dim = int(_need(unet, "time_embed.0.weight", path, what).shape[0])

    # Walk input blocks: resnet(+attention) blocks per level, a downsampler closing each but the last.
    block_ids = _indices(unet, r"input_blocks\.(\d+)\.")
    levels: list[list[int]] = [[]]
    for i in block_ids[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet:
            levels.append([])
        else:
            levels[-1].append(i)
    if not levels[-1]:
        raise ModelLoadError(path, "UNet ends with a downsampler; expected resnet blocks after it")
    layers = {len(level) for level in levels}
    if len(layers) != 1 or 0 in layers:
        raise ModelLoadError(path, f"UNet levels have different block counts {sorted(layers)}; expected one")
    layers_per_block = layers.pop()

    channels: list[int] = []
    attention: list[bool] = []
    depths: list[int] = []
    cross_dim: int | None = None
    linear_proj: bool | None = None
    for level in levels:
        widths = {int(_need(unet, f"input_blocks.{i}.0.out_layers.3.weight", path, what).shape[0]) for i in level}
        has_attn = {f"input_blocks.{i}.1.proj_in.weight" in unet for i in level}
        if len(widths) != 1 or len(has_attn) != 1:
            raise ModelLoadError(path, "UNet level mixes widths or attention; expected a uniform level")
        channels.append(widths.pop())
        attention.append(has_attn.pop())
        level_depths = {len(_indices(unet, rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.")) for i in level}
        if len(level_depths) != 1:
            raise ModelLoadError(path, "UNet level has blocks of different transformer depth")
        depths.append(level_depths.pop() or 1)
        if attention[-1]:
            first = level[0]
            proj_in = unet[f"input_blocks.{first}.1.proj_in.weight"]
            linear_proj = proj_in.ndim == 2
            cross_dim = int(
                _need(unet, f"input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight", path, what).shape[1]
            )

    mid_depth = len(_indices(unet, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    if mid_depth == 0:
        raise ModelLoadError(path, "UNet has no middle-block attention; expected an SD-style cross-attention mid block")
    if cross_dim is None:
        proj_in = _need(unet, "middle_block.1.proj_in.weight", path, what)
        linear_proj = proj_in.ndim == 2
        cross_dim = int(_need(unet, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", path, what).shape[1])
    if attention[-1] and depths[-1] != mid_depth:
        raise ModelLoadError(path, f"UNet mid-block depth {mid_depth} differs from last level's {depths[-1]}")
    used = {d for d, a in zip(depths, attention, strict=True) if a} | {mid_depth}
    if len(used) == 1:  # one depth everywhere (SD1/SD2/refiner): a plain int, as diffusers writes it
        depth_config: int | list[int] = used.pop()
    else:  # diffusers takes the mid-block depth from the last level
        depth_config = [d if a else 1 for d, a in zip(depths, attention, strict=True)]
        depth_config[-1] = mid_depth

    n_out = len(_indices(unet, r"output_blocks\.(\d+)\."))
    if n_out != len(levels) * (layers_per_block + 1):
        raise ModelLoadError(
            path, f"UNet has {n_out} output blocks; expected {len(levels) * (layers_per_block + 1)} for its input side"
        )

    if family == "sd1":
        heads: int | list[int] = _heads(channels[0], fixed=8)
        if any(c % heads for c in channels):
            heads = [_heads(c, fixed=8) for c in channels]
    else:
        heads = [_heads(c) for c in channels]

    config: dict[str, Any] = {
        "sample_size": 128 if family == "sdxl" else 64,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "block_out_channels": channels,
        "layers_per_block": layers_per_block,
        "cross_attention_dim": cross_dim,
        "attention_head_dim": heads,
        "use_linear_projection": bool(linear_proj),
        "transformer_layers_per_block": depth_config,
    }
    if channels[0] != model_channels:
        raise ModelLoadError(path, f"UNet conv_in width {model_channels} differs from first level {channels[0]}")
    if time_embed_dim != 4 * model_channels:
        config["time_embedding_dim"] = time_embed_dim
    if "label_emb.0.0.weight" in unet:
        config["addition_embed_type"] = "text_time"
        config["projection_class_embeddings_input_dim"] = int(unet["label_emb.0.0.weight"].shape[1])
        config["addition_time_embed_dim"] = SDXL_TIME_ID_WIDTH
    return config


def _sdxl_time_ids(unet_config: Mapping[str, Any], pooled_dim: int | None) -> int:
    """How many size/crop/score ids the SDXL UNet takes: 6 for the base, 5 for the refiner."""
    adm = int(unet_config["projection_class_embeddings_input_dim"])
    if pooled_dim is None:  # bare UNet: the refiner's context is OpenCLIP-G alone, equal to the pooled width
        pooled_dim = int(unet_config["cross_attention_dim"])
        return 5 if adm - pooled_dim == 5 * SDXL_TIME_ID_WIDTH else 6
    return (adm - pooled_dim) // SDXL_TIME_ID_WIDTH


def _unet_family(unet: StateDict) -> str:
    if "label_emb.0.0.weight" in unet:
        return "sdxl"
    proj = [v for k, v in unet.items() if k.endswith(".1.proj_in.weight")]
    return "sd2" if proj and proj[0].ndim == 2 else "sd1"


# --------------------------------------------------------------------------- VAE


def _vae_config(vae: StateDict, *, channels: list[int], layers: int, attention_key: str, scaling_factor: float,
                path: Path | None) -> dict[str, Any]:
    """The AutoencoderKL config both key layouts share once their widths and depth are read."""
    what = "VAE"
    if "post_quant_conv.weight" in vae:
        latent = int(vae["post_quant_conv.weight"].shape[1])
    else:
        latent = int(_need(vae, "decoder.conv_in.weight", path, what).shape[1])
    return {
        "in_channels": int(_need(vae, "encoder.conv_in.weight", path, what).shape[1]),
        "out_channels": int(_need(vae, "decoder.conv_out.weight", path, what).shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": latent,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": scaling_factor,
        "mid_block_add_attention": attention_key in vae,
        "use_quant_conv": "quant_conv.weight" in vae,
        "use_post_quant_conv": "post_quant_conv.weight" in vae,
    }


def vae_config_from_ldm(vae: StateDict, *, scaling_factor: float, path: Path | None = None) -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config for an LDM-layout VAE (keys without prefix)."""
    what = "VAE"
    levels = _indices(vae, r"encoder\.down\.(\d+)\.")
    if not levels:
        raise ModelLoadError(path, "expected encoder.down.* blocks in the VAE, found none")
    channels = [int(_need(vae, f"encoder.down.{i}.block.0.conv2.weight", path, what).shape[0]) for i in levels]
    return _vae_config(vae, channels=channels, layers=len(_indices(vae, r"encoder\.down\.0\.block\.(\d+)\.")),
                       attention_key="encoder.mid.attn_1.q.weight", scaling_factor=scaling_factor, path=path)


_OLD_VAE_ATTENTION = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


def is_diffusers_vae(vae: StateDict) -> bool:
    return "encoder.down_blocks.0.resnets.0.conv1.weight" in vae


def normalize_diffusers_vae(vae: StateDict) -> dict[str, torch.Tensor]:
    """Current diffusers names for a diffusers-layout VAE (older files use query/key/value/proj_attn)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in vae.items():
        if ".mid_block.attentions.0." in key:
            head, _, tail = key.rpartition(".mid_block.attentions.0.")
            for old, new in _OLD_VAE_ATTENTION.items():
                if tail.startswith(old):
                    tail = new + tail[len(old):]
            key = f"{head}.mid_block.attentions.0.{tail}"
            if value.ndim == 4 and key.endswith(".weight"):
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def vae_config_from_diffusers(vae: StateDict, *, scaling_factor: float, path: Path | None = None) -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config for a VAE already in diffusers' key layout."""
    what = "VAE"
    levels = _indices(vae, r"encoder\.down_blocks\.(\d+)\.")
    channels = [int(_need(vae, f"encoder.down_blocks.{i}.resnets.0.conv2.weight", path, what).shape[0])
                for i in levels]
    layers = len(_indices(vae, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
    return _vae_config(vae, channels=channels, layers=layers,
                       attention_key="encoder.mid_block.attentions.0.to_q.weight", scaling_factor=scaling_factor,
                       path=path)


# --------------------------------------------------------------------------- text encoders


def _clip_config(hidden: int, vocab: int, positions: int, layers: int, inner: int, act: str, proj: int, pad: int):
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inner,
        "projection_dim": proj,
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": positions,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "pad_token_id": pad,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    }


def transformers_clip_spec(
    te: StateDict, *, prefix: str, name: Literal["clip_l"] = "clip_l", default_layer: int = -1, path: Path | None = None
) -> TextEncoderSpec:
    """Spec for an OpenAI CLIP text tower in transformers' key layout (``text_model.*``, keys without prefix)."""
    what = "CLIP text encoder"
    te = {k.removeprefix("text_model."): v for k, v in te.items()}
    tokens = _need(te, "embeddings.token_embedding.weight", path, what)
    positions = _need(te, "embeddings.position_embedding.weight", path, what)
    layers = len(_indices(te, r"encoder\.layers\.(\d+)\."))
    inner = _need(te, "encoder.layers.0.mlp.fc1.weight", path, what)
    hidden = int(tokens.shape[1])
    config = _clip_config(hidden, int(tokens.shape[0]), int(positions.shape[0]), layers, int(inner.shape[0]),
                          "quick_gelu", hidden, 49407)
    return TextEncoderSpec(name=name, prefix=prefix, layout="transformers", config=config, with_projection=False,
                           pad="sd1", default_layer=default_layer)


def open_clip_spec(
    te: StateDict,
    *,
    prefix: str,
    name: Literal["clip_h", "clip_g"],
    with_projection: bool,
    default_layer: int = -2,
    path: Path | None = None,
) -> TextEncoderSpec:
    """Spec for an OpenCLIP text tower (``token_embedding``, ``transformer.resblocks.*``; keys without prefix)."""
    what = "OpenCLIP text encoder"
    tokens = _need(te, "token_embedding.weight", path, what)
    positions = _need(te, "positional_embedding", path, what)
    layers = len(_indices(te, r"transformer\.resblocks\.(\d+)\."))
    inner = _need(te, "transformer.resblocks.0.mlp.c_fc.weight", path, what)
    hidden = int(tokens.shape[1])
    proj = int(te["text_projection"].shape[1]) if "text_projection" in te else hidden
    if with_projection and "text_projection" not in te:
        raise ModelLoadError(path, f"expected key {prefix + 'text_projection'!r} for the pooled OpenCLIP output")
    config = _clip_config(hidden, int(tokens.shape[0]), int(positions.shape[0]), layers, int(inner.shape[0]),
                          "gelu", proj, 0)
    return TextEncoderSpec(name=name, prefix=prefix, layout="open_clip", config=config,
                           with_projection=with_projection, pad="open_clip", default_layer=default_layer)


# --------------------------------------------------------------------------- whole files


def _v_prediction_guess(unet: StateDict) -> bool:
    """SD2 768-v files carry no flag; a wide spread of the last attention's norm1 bias marks them."""
    key = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    if key not in unet:  # narrower models: the last output block that has attention
        ids = [i for i in _indices(unet, r"output_blocks\.(\d+)\.")
               if f"output_blocks.{i}.1.transformer_blocks.0.norm1.bias" in unet]
        if not ids:
            return False
        key = f"output_blocks.{ids[-1]}.1.transformer_blocks.0.norm1.bias"
    return float(unet[key].float().std()) > V_PREDICTION_STD_THRESHOLD


def _check_prediction_type(prediction_type: str | None) -> None:
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")


def detect_text_encoders(sd: StateDict, *, path: Path | None = None) -> tuple[str | None, tuple[TextEncoderSpec, ...]]:
    """The text-encoder family ("sd1", "sd2", "sdxl", "sdxl_refiner" or None) and its encoder specs."""
    if _has_prefix(sd, SDXL_CLIP_L_PREFIX) or _has_prefix(sd, SDXL_CLIP_G_PREFIX):
        if not (_has_prefix(sd, SDXL_CLIP_L_PREFIX) and _has_prefix(sd, SDXL_CLIP_G_PREFIX)):
            raise ModelLoadError(path, "SDXL file has only one of its two text encoders; expected "
                                       f"{SDXL_CLIP_L_PREFIX}* and {SDXL_CLIP_G_PREFIX}*")
        clip_l = transformers_clip_spec(_strip(sd, SDXL_CLIP_L_PREFIX), prefix=SDXL_CLIP_L_PREFIX,
                                        default_layer=-2, path=path)
        clip_g = open_clip_spec(_strip(sd, SDXL_CLIP_G_PREFIX), prefix=SDXL_CLIP_G_PREFIX, name="clip_g",
                                with_projection=True, path=path)
        return "sdxl", (clip_l, clip_g)
    if _has_prefix(sd, REFINER_CLIP_G_PREFIX):
        clip_g = open_clip_spec(_strip(sd, REFINER_CLIP_G_PREFIX), prefix=REFINER_CLIP_G_PREFIX, name="clip_g",
                                with_projection=True, path=path)
        return "sdxl_refiner", (clip_g,)
    if _has_prefix(sd, SD2_CLIP_PREFIX):
        spec = open_clip_spec(_strip(sd, SD2_CLIP_PREFIX), prefix=SD2_CLIP_PREFIX, name="clip_h",
                              with_projection=False, path=path)
        return "sd2", (spec,)
    if _has_prefix(sd, SD1_CLIP_PREFIX):
        return "sd1", (transformers_clip_spec(_strip(sd, SD1_CLIP_PREFIX), prefix=SD1_CLIP_PREFIX, path=path),)
    return None, ()


def detect_unet(
    unet: StateDict,
    *,
    te_family: str | None = None,
    pooled_dim: int | None = None,
    prediction_type: str | None = None,
    path: Path | None = None,
) -> tuple[Kind, PredictionType, dict[str, Any]]:
    """Kind, prediction type and diffusers config of an LDM UNet (keys without prefix)."""
    _check_prediction_type(prediction_type)
    family = _unet_family(unet)
    expected = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sdxl_refiner": "sdxl"}
    if te_family is not None and expected[te_family] != family:
        raise ModelLoadError(path, f"text encoders are {te_family} but the UNet looks like {family}; "
                                   "expected matching parts")
    config = unet_config_from_ldm(unet, family=family, path=path)
    kind: str = family
    if family == "sdxl":
        n_ids = _sdxl_time_ids(config, pooled_dim)
        refiner = te_family == "sdxl_refiner" if te_family else n_ids == 5
        if n_ids != (5 if refiner else 6):
            raise ModelLoadError(path, f"SDXL UNet takes {config['projection_class_embeddings_input_dim']} "
                                       f"conditioning features; expected pooled width {pooled_dim} plus "
                                       f"{5 if refiner else 6}×{SDXL_TIME_ID_WIDTH}")
        kind = "sdxl_refiner" if refiner else "sdxl"
    if config["in_channels"] == 9 and kind != "sdxl_refiner":
        kind = f"{kind}_inpaint"
    elif config["in_channels"] != 4:
        raise ModelLoadError(
            path, f"UNet takes {config['in_channels']} input channels; expected 4, or 9 for inpainting"
        )

    if prediction_type is None:
        prediction_type = "epsilon"
        if family == "sd2" and _v_prediction_guess(unet):
            prediction_type = "v_prediction"
    if family == "sd2" and prediction_type == "v_prediction":
        config["sample_size"] = 96  # the 768×768 v models
    return kind, prediction_type, config  # type: ignore[return-value]


def detect_checkpoint(
    sd: StateDict, *, prediction_type: str | None = None, path: str | Path | None = None
) -> CheckpointInfo:
    """Detect a full single-file checkpoint: UNet, VAE and text encoders in the original key layout."""
    path = Path(path) if path is not None else None
    _check_prediction_type(prediction_type)
    if not _has_prefix(sd, UNET_PREFIX):
        raise ModelLoadError(path, f"no {UNET_PREFIX}* keys; expected a Stable Diffusion checkpoint "
                                   "(SD1, SD2, SDXL or SDXL refiner, original single-file layout)")
    te_family, encoders = detect_text_encoders(sd, path=path)
    if te_family is None:
        raise ModelLoadError(path, "no text encoder keys (cond_stage_model.* or conditioner.embedders.*); "
                                   "expected a full checkpoint")
    if not _has_prefix(sd, VAE_PREFIX):
        raise ModelLoadError(path, f"no {VAE_PREFIX}* keys; expected the checkpoint to include its VAE")
    if "v_pred" in sd and prediction_type is None:
        prediction_type = "v_prediction"  # SDXL v-prediction files mark themselves with this key
    pooled = encoders[-1].config["projection_dim"] if te_family.startswith("sdxl") else None
    kind, pred, unet_config = detect_unet(_strip(sd, UNET_PREFIX), te_family=te_family, pooled_dim=pooled,
                                          prediction_type=prediction_type, path=path)
    context = sum(spec.config["hidden_size"] for spec in encoders)
    if context != unet_config["cross_attention_dim"]:
        raise ModelLoadError(path, f"UNet cross-attention width {unet_config['cross_attention_dim']} does not "
                                   f"match the text encoders' {context}; expected equal widths")
    scale = SDXL_VAE_SCALE if kind.startswith("sdxl") else SD_VAE_SCALE
    vae_config = vae_config_from_ldm(_strip(sd, VAE_PREFIX), scaling_factor=scale, path=path)
    if vae_config["latent_channels"] != unet_config["in_channels"] and unet_config["in_channels"] != 9:
        raise ModelLoadError(path, f"VAE latent channels {vae_config['latent_channels']} do not match the UNet's "
                                   f"{unet_config['in_channels']} input channels")
    return CheckpointInfo(kind=kind, prediction_type=pred, vae_scaling_factor=scale, unet_config=unet_config,
                          vae_config=vae_config, text_encoders=encoders)
