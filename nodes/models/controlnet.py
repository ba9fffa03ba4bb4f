"""Load ControlNet and T2I-Adapter files into diffusers modules (the CONTROL_NET value).

One loader for every layout users download (see `controlnet_layouts`):
- ControlNet 1.0/1.1 (`control_model.*` or bare LDM names; `.pth` through weights_only, `.safetensors`),
  diffusers ControlNets (SD1, SD2, SDXL including the small/mid variants) -> `ControlNetModel`;
- ControlNet-Union / ProMax (SDXL) -> `ControlNetUnionModel`, the type chosen by SetUnionControlNetType;
- "diff" ControlNets (a `difference` key): the stored weights are differences to a U-Net's, so they
  need the MODEL they were made for (DiffControlNetLoader);
- control-LoRA files (`lora_controlnet` key): a ControlNet made from the sampling U-Net's own weights
  plus low-rank (`.up`/`.down`) and full replacements, built when sampling starts;
- T2I-Adapters (full, light, SDXL; original or diffusers names) -> `T2IAdapter`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, ControlNetUnionModel, T2IAdapter

from nodes.base.errors import ModelLoadError

from .controlnet_layouts import (
    LDM_PREFIX,
    SHUFFLE_SUFFIXES,
    controlnet_config,
    layout,
    ldm_to_diffusers,
    t2i_config,
    t2i_to_diffusers,
)
from .convert import _materialise
from .weights_file import read_state_dict

# SetUnionControlNetType's choices and the task index each selects (ComfyUI's names).
UNION_TYPES: dict[str, int] = {"openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2,
                               "canny/lineart/anime_lineart/mlsd": 3, "normal": 4, "segment": 5, "tile": 6,
                               "repaint": 7}


@dataclass(frozen=True, kw_only=True, eq=False)
class ControlNetHandle:
    """CONTROL_NET: a loaded control model and how to run it.

    kind: "controlnet" (ControlNetModel or ControlNetUnionModel), "t2i_adapter", or "control_lora"
    (weights only; the network is built from the sampling U-Net when sampling starts).
    """

    kind: str
    model: torch.nn.Module | None
    source: Path | None = None
    manager: Any = None
    global_pool: bool = False  # ControlNet 1.1 shuffle: residuals averaged over space
    union_type: int | None = None  # union models: the task index; None = "auto"
    lora_weights: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def is_union(self) -> bool:
        return isinstance(self.model, ControlNetUnionModel)

    def with_union_type(self, union_type: int | None) -> ControlNetHandle:
        return replace(self, union_type=union_type)

    def __sumie_size__(self) -> int:
        return 0


def _strip_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet's own keys: `control_model.*` (full 1.0 files also hold the whole SD model) or bare."""
    if any(k.startswith(LDM_PREFIX) for k in sd):
        return {k[len(LDM_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    return {k: v for k, v in sd.items() if k != "difference"}


def build_controlnet(weights: Mapping[str, torch.Tensor], *, path: Path | None, dtype: torch.dtype | None,
                     device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ControlNetModel (or ControlNetUnionModel) from diffusers-named weights, config read from shapes."""
    config = controlnet_config(weights, path)
    if "num_control_type" in config:
        weights = {k.replace(".attn.in_proj.", ".attn.in_proj_"): v for k, v in weights.items()}
        return _materialise(lambda: ControlNetUnionModel(**config), weights, what="ControlNet-Union", path=path,
                            dtype=dtype, device=device)
    return _materialise(lambda: ControlNetModel(**config), weights, what="ControlNet", path=path, dtype=dtype,
                        device=device)


def unet_ldm_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers U-Net's current weights under the original (LDM) names the ControlNet files use."""
    from .random_checkpoint import unet_to_ldm

    return unet_to_ldm(dict(unet.state_dict()), dict(unet.config))


def _apply_difference(control: dict[str, torch.Tensor], base_unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """"diff" ControlNets store W_control - W_unet: add the U-Net's weight wherever one of that name exists."""
    base = unet_ldm_weights(base_unet)
    out = {}
    for key, value in control.items():
        if key in base and tuple(base[key].shape) == tuple(value.shape):
            value = value.float() + base[key].detach().float().to(value.device)
        out[key] = value
    return out


def control_lora_weights(lora: Mapping[str, torch.Tensor], base_unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LDM-named ControlNet weights of a control-LoRA on top of `base_unet` (its weights as they are now).

    Full tensors in the file replace the U-Net's; `<layer>.up`/`.down` pairs add `up @ down` to the
    U-Net's `<layer>.weight`. Only the input side of the U-Net is part of a ControlNet.
    """
    base = unet_ldm_weights(base_unet)
    out = {k: v.detach() for k, v in base.items()
           if k.startswith(("input_blocks.", "middle_block.", "time_embed.", "label_emb."))}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        if key == "lora_controlnet":
            continue
        if m := re.fullmatch(r"(.+)\.(up|down)", key):
            pairs.setdefault(m[1], {})[m[2]] = value
        else:
            out[key] = value
    for name, pair in pairs.items():
        weight_key = f"{name}.weight"
        if set(pair) != {"up", "down"} or weight_key not in out:
            raise ModelLoadError(None, f"control-LoRA layer {name!r} has no matching U-Net weight or lacks up/down")
        weight = out[weight_key]
        delta = pair["up"].float().flatten(1) @ pair["down"].float().flatten(1)
        out[weight_key] = (weight.float() + delta.to(weight.device).reshape(weight.shape)).to(weight.dtype)
    return out


def load_controlnet(path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    base_unet: torch.nn.Module | None = None) -> ControlNetHandle:
    """A CONTROL_NET from any supported file; `base_unet` is the MODEL's U-Net for "diff" ControlNets."""
    path = Path(path)
    sd = read_state_dict(path)
    kind = layout(sd)
    if kind == "control_lora":
        if "input_hint_block.0.weight" not in sd:
            raise ModelLoadError(path, "control-LoRA file has no input_hint_block.0.weight")
        return ControlNetHandle(kind="control_lora", model=None, source=path, lora_weights=dict(sd))
    if kind in ("t2i_diffusers", "t2i_full", "t2i_light"):
        weights = dict(sd) if kind == "t2i_diffusers" else t2i_to_diffusers(sd, kind, path)
        config = t2i_config(weights, path)
        adapter = _materialise(lambda: T2IAdapter(**config), weights, what="T2I-Adapter", path=path, dtype=dtype,
                               device=device)
        return ControlNetHandle(kind="t2i_adapter", model=adapter, source=path)
    if kind == "unknown" and any(k.startswith(("controlnet_blocks.", "controlnet_x_embedder.")) for k in sd):
        raise ModelLoadError(path, "this ControlNet is for a transformer model (SD3, Flux, HunyuanDiT, ...); "
                                   "expected an SD1, SD2 or SDXL ControlNet")
    if kind == "unknown":
        raise ModelLoadError(path, "not a ControlNet or T2I-Adapter: expected ControlNet keys (control_model.*, "
                                   "zero_convs.*, controlnet_cond_embedding.*), control-LoRA (lora_controlnet) or "
                                   "T2I-Adapter keys (conv_in/body.*, adapter.*)")
    if kind == "diffusers":
        weights = dict(sd)
    else:
        control = _strip_ldm(sd)
        if "difference" in sd:
            if base_unet is None:
                raise ModelLoadError(path, "this is a \"diff\" ControlNet (weights relative to a model); load it "
                                           "with DiffControlNetLoader and the model it was made for")
            control = _apply_difference(control, base_unet)
        weights = ldm_to_diffusers(control, path)
    model = build_controlnet(weights, path=path, dtype=dtype, device=device)
    pooled = path.stem.endswith(SHUFFLE_SUFFIXES)
    return ControlNetHandle(kind="controlnet", model=model, source=path, global_pool=pooled)


__all__ = ["UNION_TYPES", "ControlNetHandle", "build_controlnet", "control_lora_weights", "load_controlnet",
           "unet_ldm_weights"]
