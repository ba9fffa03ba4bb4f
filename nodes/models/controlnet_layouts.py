"""ControlNet and T2I-Adapter files: tell the layouts apart by their keys, rename to diffusers, infer configs.

Everything is brought to diffusers' key names first and the config is then read from shapes only,
so every layout (lllyasviel's LDM names with or without `control_model.`, diffusers files, SDXL
small/mid variants with empty attention levels, the union models) goes through one detector:
- ControlNet: `down_blocks.*`, `controlnet_down_blocks.*`, `controlnet_cond_embedding.*`; a union model
  adds `task_embedding`, `transformer_layes.*`, `spatial_ch_projs`, `control_add_embedding`;
- T2I-Adapter: `adapter.conv_in` (full; an unshuffle by 16, i.e. 256 or 768 input features, is SDXL)
  or `adapter.body.N.in_conv`/`out_conv` (light).
Shapes do not carry head counts: SD1 uses 8 heads, SD2/SDXL heads of 64 channels (as for checkpoints).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.base.errors import ModelLoadError

from .detect import SDXL_TIME_ID_WIDTH, _heads, _indices
from .ldm_names import RESNET_NAMES, UNET_FIXED_NAMES

StateDict = Mapping[str, torch.Tensor]
LDM_PREFIX = "control_model."
SHUFFLE_SUFFIXES = ("_shuffle", "_shuffle_fp16")  # ControlNet 1.1 shuffle: residuals are averaged over space

_FIXED = {**UNET_FIXED_NAMES, "middle_block_out.0": "controlnet_mid_block"}


def layout(sd: StateDict) -> str:
    """"control_lora", "diffusers", "ldm", "t2i_diffusers", "t2i_full", "t2i_light" or "unknown"."""
    if "lora_controlnet" in sd:
        return "control_lora"
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        return "diffusers"
    if f"{LDM_PREFIX}zero_convs.0.0.weight" in sd or "zero_convs.0.0.weight" in sd:
        return "ldm"
    if any(k.startswith("adapter.") for k in sd):
        return "t2i_diffusers"
    if "conv_in.weight" in sd and "body.0.block1.weight" in sd:
        return "t2i_full"
    if "body.0.in_conv.weight" in sd and "body.0.body.0.block1.weight" in sd:
        return "t2i_light"
    return "unknown"


# --------------------------------------------------------------------------- ControlNet keys


def _resnet(rest: str) -> str:
    for old, new in RESNET_NAMES:
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(rest)


def _layers_per_block(ldm: StateDict) -> int:
    """Input blocks per level: those before the first downsampler (`input_blocks.N.0.op`)."""
    ops = _indices(ldm, r"input_blocks\.(\d+)\.0\.op\.")
    blocks = _indices(ldm, r"input_blocks\.(\d+)\.")
    return (ops[0] - 1) if ops else len(blocks) - 1


def ldm_to_diffusers(ldm: StateDict, path: Path | None = None) -> dict[str, torch.Tensor]:
    """diffusers `ControlNetModel` names for an LDM-layout ControlNet (keys without `control_model.`)."""
    step = _layers_per_block(ldm) + 1
    hint_ids = _indices(ldm, r"input_hint_block\.(\d+)\.")
    if not hint_ids:
        raise ModelLoadError(path, "no input_hint_block.* keys; expected a ControlNet")
    hint_names = {hint_ids[0]: "conv_in", hint_ids[-1]: "conv_out"}
    hint_names.update({i: f"blocks.{n}" for n, i in enumerate(hint_ids[1:-1])})
    out: dict[str, torch.Tensor] = {}
    for key, value in ldm.items():
        module, _, leaf = key.rpartition(".")
        try:
            if module in _FIXED:
                name = f"{_FIXED[module]}.{leaf}"
            elif m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.(.+)", key):
                name = f"down_blocks.{(int(m[1]) - 1) // step}.downsamplers.0.conv.{m[2]}"
            elif m := re.fullmatch(r"input_blocks\.(\d+)\.0\.(.+)", key):
                k = int(m[1]) - 1
                name = f"down_blocks.{k // step}.resnets.{k % step}.{_resnet(m[2])}"
            elif m := re.fullmatch(r"input_blocks\.(\d+)\.1\.(.+)", key):
                k = int(m[1]) - 1
                name = f"down_blocks.{k // step}.attentions.{k % step}.{m[2]}"
            elif m := re.fullmatch(r"middle_block\.([02])\.(.+)", key):
                name = f"mid_block.resnets.{int(m[1]) // 2}.{_resnet(m[2])}"
            elif m := re.fullmatch(r"middle_block\.1\.(.+)", key):
                name = f"mid_block.attentions.0.{m[1]}"
            elif m := re.fullmatch(r"zero_convs\.(\d+)\.0\.(.+)", key):
                name = f"controlnet_down_blocks.{m[1]}.{m[2]}"
            elif m := re.fullmatch(r"input_hint_block\.(\d+)\.(.+)", key):
                name = f"controlnet_cond_embedding.{hint_names[int(m[1])]}.{m[2]}"
            else:
                raise KeyError(key)
        except KeyError:
            raise ModelLoadError(path, f"unexpected ControlNet key {key!r}; expected the ControlNet layout "
                                       "(input_blocks, middle_block, zero_convs, input_hint_block)") from None
        out[name] = value
    return out


def controlnet_config(sd: StateDict, path: Path | None = None) -> dict[str, Any]:
    """diffusers `ControlNetModel` (or `ControlNetUnionModel`) config read from a diffusers-named state dict."""
    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise ModelLoadError(path, f"expected ControlNet key {key!r}, it is missing")
        return sd[key]

    levels = _indices(sd, r"down_blocks\.(\d+)\.")
    if not levels:
        raise ModelLoadError(path, "no down_blocks.* keys; expected a ControlNet")
    channels = [int(need(f"down_blocks.{i}.resnets.0.conv2.weight").shape[0]) for i in levels]
    attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in levels]
    depths = [len(_indices(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")) for i in levels]
    mid_attention = "mid_block.attentions.0.proj_in.weight" in sd
    mid_depth = len(_indices(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    proj = next((v for k, v in sd.items() if k.endswith("attentions.0.proj_in.weight")), None)
    to_k = next((v for k, v in sd.items() if k.endswith("attn2.to_k.weight")), None)
    sdxl = "add_embedding.linear_1.weight" in sd
    linear = proj is not None and proj.ndim == 2
    family = "sdxl" if sdxl else ("sd2" if linear else "sd1")
    heads: int | list[int] = 8 if family == "sd1" else [_heads(c) for c in channels]
    if family == "sd1" and any(c % 8 for c in channels):
        heads = [_heads(c, fixed=8) for c in channels]
    embedding = need("controlnet_cond_embedding.conv_in.weight")
    emb_channels = [int(embedding.shape[0])]
    emb_channels += [int(need(f"controlnet_cond_embedding.blocks.{2 * n + 1}.weight").shape[0])
                     for n in range(len(_indices(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.")) // 2)]
    layer_depths = [d if a else 1 for d, a in zip(depths, attention, strict=True)]
    if mid_attention:
        layer_depths[-1] = mid_depth
    config: dict[str, Any] = {
        "in_channels": int(need("conv_in.weight").shape[1]),
        "conditioning_channels": int(embedding.shape[1]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "block_out_channels": channels,
        "layers_per_block": len(_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\.")),
        "cross_attention_dim": int(to_k.shape[1]) if to_k is not None else channels[-1],
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": layer_depths,
        "conditioning_embedding_out_channels": emb_channels,
    }
    if sdxl:
        config.update({"addition_embed_type": "text_time", "addition_time_embed_dim": SDXL_TIME_ID_WIDTH,
                       "projection_class_embeddings_input_dim": int(sd["add_embedding.linear_1.weight"].shape[1])})
    if "task_embedding" in sd:  # ControlNet-Union / ProMax: always a cross-attention mid block
        task = sd["task_embedding"]
        config.update({"num_control_type": int(task.shape[0]), "num_trans_channel": int(task.shape[1]),
                       "num_trans_head": 8, "num_trans_layer": len(_indices(sd, r"transformer_layes\.(\d+)\.")),
                       "num_proj_channel": int(need("spatial_ch_projs.weight").shape[0])})
        if not sdxl:
            config.update({"addition_time_embed_dim": SDXL_TIME_ID_WIDTH})
    elif not mid_attention:
        config["mid_block_type"] = "UNetMidBlock2D"
    return config


# --------------------------------------------------------------------------- T2I-Adapters


def t2i_to_diffusers(sd: StateDict, kind: str, path: Path | None = None) -> dict[str, torch.Tensor]:
    """diffusers `T2IAdapter` names for TencentARC's original full (`body.N.block1`) or light layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if kind == "t2i_full":
            if key.startswith("conv_in."):
                out["adapter." + key] = value
                continue
            m = re.fullmatch(r"body\.(\d+)\.(block1|block2|in_conv)\.(weight|bias)", key)
            if m is None:
                raise ModelLoadError(path, f"unsupported T2I-Adapter key {key!r}; expected the full adapter layout "
                                           "(conv_in, body.N.block1/block2/in_conv) with average-pool downsampling")
            level, block = divmod(int(m[1]), 2)
            if m[2] == "in_conv":
                out[f"adapter.body.{level}.in_conv.{m[3]}"] = value
            else:
                out[f"adapter.body.{level}.resnets.{block}.{m[2]}.{m[3]}"] = value
        else:
            m = re.fullmatch(r"body\.(\d+)\.(?:(in_conv|out_conv)|body\.(\d+)\.(block1|block2))\.(weight|bias)", key)
            if m is None:
                raise ModelLoadError(path, f"unsupported light T2I-Adapter key {key!r}; expected "
                                           "body.N.in_conv/out_conv/body.M.block1/block2")
            if m[2]:
                out[f"adapter.body.{m[1]}.{m[2]}.{m[5]}"] = value
            else:
                out[f"adapter.body.{m[1]}.resnets.{m[3]}.{m[4]}.{m[5]}"] = value
    return out


def t2i_config(sd: StateDict, path: Path | None = None) -> dict[str, Any]:
    """diffusers `T2IAdapter` config from diffusers-named weights."""
    if "adapter.conv_in.weight" in sd:
        conv_in = sd["adapter.conv_in.weight"]
        features = int(conv_in.shape[1])
        xl = features in (256, 768)
        factor = 16 if xl else 8
        if features % (factor * factor):
            raise ModelLoadError(path, f"T2I-Adapter conv_in takes {features} features; expected a multiple of "
                                       f"{factor * factor} (pixel-unshuffle by {factor})")
        levels = _indices(sd, r"adapter\.body\.(\d+)\.")
        for level in levels:
            ksize = sd[f"adapter.body.{level}.resnets.0.block2.weight"].shape[-1]
            if ksize != 1:
                raise ModelLoadError(path, f"T2I-Adapter uses {ksize}x{ksize} second convolutions; only the "
                                           "1x1 kind (every released full adapter) is supported")
        channels = [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in levels]
        return {"in_channels": features // (factor * factor), "channels": channels,
                "num_res_blocks": len(_indices(sd, r"adapter\.body\.0\.resnets\.(\d+)\.")),
                "downscale_factor": factor, "adapter_type": "full_adapter_xl" if xl else "full_adapter"}
    if "adapter.body.0.in_conv.weight" in sd and "adapter.body.0.out_conv.weight" in sd:
        levels = _indices(sd, r"adapter\.body\.(\d+)\.")
        outs = [int(sd[f"adapter.body.{i}.out_conv.weight"].shape[0]) for i in levels]
        if len(outs) < 2 or outs[-1] != outs[-2]:
            raise ModelLoadError(path, f"light T2I-Adapter levels {outs}; expected the last two to be equally wide")
        return {"in_channels": int(sd["adapter.body.0.in_conv.weight"].shape[1]) // 64, "channels": outs[:-1],
                "num_res_blocks": len(_indices(sd, r"adapter\.body\.0\.resnets\.(\d+)\.")),
                "downscale_factor": 8, "adapter_type": "light_adapter"}
    raise ModelLoadError(path, "unrecognised T2I-Adapter weights; expected adapter.conv_in (full) or "
                               "adapter.body.0.in_conv/out_conv (light)")


__all__ = ["LDM_PREFIX", "SHUFFLE_SUFFIXES", "controlnet_config", "layout", "ldm_to_diffusers", "t2i_config",
           "t2i_to_diffusers"]
