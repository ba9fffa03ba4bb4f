"""Tiny random ControlNets and T2I-Adapters for the tiny checkpoints, written in the layouts users download.

ControlNets are made from the tiny U-Net (diffusers' `ControlNetModel.from_unet`) with every weight
perturbed (the zero convolutions too, so they do something), then saved as diffusers files, as
lllyasviel LDM files (`control_model.*` or bare; `.safetensors` or `.pth`), as "diff" files and as
control-LoRAs. T2I-Adapters are saved in TencentARC's original full/light layouts or diffusers'.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import ControlNetModel, T2IAdapter
from safetensors.torch import save_file

from nodes.models.random_checkpoint import perturb, unet_to_ldm

from .tiny_models import tiny_models

EMBEDDING = (8, 8, 16, 16)  # three stride-2 steps: hint at 8x the latent size, as real files


def tiny_controlnet(kind: str = "sd1", seed: int = 0, *, zero: bool = False) -> ControlNetModel:
    """A ControlNet for the tiny `kind` U-Net; `zero=True` keeps the zero convolutions at zero."""
    unet = tiny_models(kind).unet
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING).eval()
    perturb(net, torch.Generator().manual_seed(seed))
    if zero:
        with torch.no_grad():
            for name, param in net.named_parameters():
                if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
                    param.zero_()
    return net


def controlnet_to_ldm(net: ControlNetModel) -> dict[str, torch.Tensor]:
    """lllyasviel's key names (without `control_model.`) for a diffusers ControlNet."""
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    out: dict[str, torch.Tensor] = {}
    unet_like = {}
    for key, value in sd.items():
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(\w+)", key):
            out[f"zero_convs.{m[1]}.0.{m[2]}"] = value
        elif m := re.fullmatch(r"controlnet_mid_block\.(\w+)", key):
            out[f"middle_block_out.0.{m[1]}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(\w+)", key):
            out[f"input_hint_block.0.{m[1]}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(\w+)", key):
            out[f"input_hint_block.{2 * int(m[1]) + 2}.{m[2]}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(\w+)", key):
            out[f"input_hint_block.{2 * blocks + 2}.{m[1]}"] = value
        else:
            unet_like[key] = value
    out.update(unet_to_ldm(unet_like, {"layers_per_block": net.config.layers_per_block, "up_block_types": []}))
    return out


def _sd1_unet_ldm() -> dict[str, torch.Tensor]:
    """The tiny SD1 U-Net under its original (LDM) names: what "diff" files and control-LoRAs build on."""
    unet = tiny_models("sd1").unet
    return unet_to_ldm(dict(unet.state_dict()), dict(unet.config))


def _save(sd: dict[str, torch.Tensor], path: Path) -> None:
    """A pickle for `.pth` names (as older releases ship), safetensors otherwise."""
    if Path(path).suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))


def write_controlnet(path: Path, net: ControlNetModel, layout: str = "ldm") -> Path:
    """layout: "diffusers", "ldm" (control_model.*), "ldm_bare", "diff" (differences to the U-Net)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers":
        sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    else:
        ldm = controlnet_to_ldm(net)
        if layout == "diff":
            base = _sd1_unet_ldm()
            ldm = {k: v - base[k] if k in base else v for k, v in ldm.items()}
        prefix = "" if layout == "ldm_bare" else "control_model."
        sd = {prefix + k: v.contiguous() for k, v in ldm.items()}
        if layout == "diff":
            sd["difference"] = torch.tensor([])
    _save(sd, path)
    return path


def write_control_lora(path: Path, net: ControlNetModel, rank: int = 2, seed: int = 3) -> tuple[Path, dict]:
    """A control-LoRA: the ControlNet-only parts in full, one attention projection as up/down, the rest
    left to the U-Net. Returns the path and the LDM-named weights the ControlNet should end up with."""
    base = _sd1_unet_ldm()
    ldm = controlnet_to_ldm(net)
    gen = torch.Generator().manual_seed(seed)
    file: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    expected = {k: v for k, v in base.items() if k in ldm}
    for key, value in ldm.items():
        if key.startswith(("input_hint_block.", "zero_convs.", "middle_block_out.")):
            file[key] = value.contiguous()
            expected[key] = value
    target = "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    weight = base[f"{target}.weight"]
    up = torch.randn(weight.shape[0], rank, generator=gen) * 0.1
    down = torch.randn(rank, weight.shape[1], generator=gen) * 0.1
    file[f"{target}.up"], file[f"{target}.down"] = up, down
    expected[f"{target}.weight"] = weight + up @ down
    save_file(file, str(path))
    return path, expected


def tiny_adapter(kind: str = "full", seed: int = 0, in_channels: int = 3) -> T2IAdapter:
    """A T2I-Adapter whose features fit the tiny SD1 U-Net (32 and 64 channels at 1/8 and 1/16)."""
    if kind == "light":
        adapter = T2IAdapter(in_channels=in_channels, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                             adapter_type="light_adapter")
    else:
        adapter = T2IAdapter(in_channels=in_channels, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                             adapter_type="full_adapter")
    perturb(adapter.eval(), torch.Generator().manual_seed(seed), scale=0.2)
    return adapter


def write_adapter(path: Path, adapter: T2IAdapter, layout: str = "original") -> Path:
    """layout "original" (TencentARC: conv_in/body.N.block1, or light body.N.body.M) or "diffusers"."""
    sd = {k: v.detach().clone().contiguous() for k, v in adapter.state_dict().items()}
    if layout == "original":
        out = {}
        light = adapter.config.adapter_type == "light_adapter"
        for key, value in sd.items():
            key = key.removeprefix("adapter.")
            if light:
                key = re.sub(r"body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", key)
            else:
                key = re.sub(r"body\.(\d+)\.resnets\.(\d+)\.", lambda m: f"body.{2 * int(m[1]) + int(m[2])}.", key)
                key = re.sub(r"body\.(\d+)\.in_conv\.", lambda m: f"body.{2 * int(m[1])}.in_conv.", key)
            out[key] = value
        sd = out
    _save(sd, path)
    return path
