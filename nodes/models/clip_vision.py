"""CLIP vision encoders (CLIP_VISION) from the files users have, through transformers' CLIPVisionModelWithProjection.

Files come in two layouts: transformers' (`vision_model.*`, `visual_projection.weight`: the image
encoders shipped with IP-Adapter, OpenAI's ViT-L) and OpenCLIP's (`visual.*`, also inside unCLIP
checkpoints under `embedder.model.visual.`). OpenCLIP keys are converted to transformers' names. The
architecture is read from the tensor shapes; the activation follows the family (OpenAI's 1024-wide
ViT-L uses quick_gelu, OpenCLIP's ViT-H/bigG gelu), as ComfyUI's bundled configs say.

Encoding follows ComfyUI's `clip_preprocess`: bicubic (antialiased) resize of the shorter side to the
model's size and a centre crop (or a plain resize to a square with crop "none"), quantisation to 8 bits,
then CLIP's mean/std; the output carries `image_embeds`, `last_hidden_state` and
`penultimate_hidden_states` like ComfyUI's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from nodes.base.errors import ModelLoadError
from nodes.base.handles import _Handle

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_PREFIXES = ("visual.", "embedder.model.visual.", "model.visual.")
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}  # ViT-B, ViT-L, ViT-H, ViT-bigG


@dataclass(frozen=True, kw_only=True, eq=False)
class ClipVisionHandle(_Handle):
    """CLIP_VISION: the vision tower and its projection."""

    model: CLIPVisionModelWithProjection
    source: Path | None = None
    manager: Any = None

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)


class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: readable by attribute and by key, as ComfyUI's Output is."""

    def __init__(self, **values: torch.Tensor) -> None:
        self.__dict__.update(values)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __sumie_size__(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.__dict__.values() if isinstance(t, torch.Tensor))


def open_clip_to_transformers(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP `visual.*` weights under `prefix` renamed (and split) to transformers' vision names."""
    out: dict[str, torch.Tensor] = {}
    plain = {"class_embedding": "vision_model.embeddings.class_embedding",
             "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
             "positional_embedding": "vision_model.embeddings.position_embedding.weight",
             "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
             "ln_post.weight": "vision_model.post_layernorm.weight",
             "ln_post.bias": "vision_model.post_layernorm.bias"}
    inner = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    block = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$")
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in plain:
            out[plain[name]] = value
        elif name == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif (m := block.match(name)) is not None:
            layer, part, kind = m.groups()
            base = f"vision_model.encoder.layers.{layer}."
            if part == "attn.in_proj":
                for which, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{which}_proj.{kind}"] = chunk
            elif part in inner:
                out[f"{base}{inner[part]}.{kind}"] = value
    return out


def normalize_clip_vision(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Transformers-layout vision weights from either layout (or a ModelLoadError naming what was expected)."""
    for prefix in OPEN_CLIP_PREFIXES:
        if f"{prefix}transformer.resblocks.0.attn.in_proj_weight" in sd:
            return open_clip_to_transformers(sd, prefix)
    if "vision_model.embeddings.patch_embedding.weight" in sd:
        return {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}
    raise ModelLoadError(path, "no CLIP vision weights; expected transformers' vision_model.* keys or OpenCLIP's "
                               "visual.transformer.resblocks.* keys")


def clip_vision_config(sd: Mapping[str, torch.Tensor], path: Path) -> CLIPVisionConfig:
    """The architecture of transformers-layout vision weights, from their shapes."""
    try:
        patch = sd["vision_model.embeddings.patch_embedding.weight"]
        positions = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
        fc1 = sd["vision_model.encoder.layers.0.mlp.fc1.weight"]
        projection = sd["visual_projection.weight"]
    except KeyError as exc:
        raise ModelLoadError(path, f"CLIP vision weights lack {exc.args[0]!r}; expected a complete vision tower "
                                   "with its projection") from None
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise ModelLoadError(path, f"{positions} position embeddings is not a square grid plus a class token")
    layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers."))
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=int(fc1.shape[0]), projection_dim=int(projection.shape[0]),
        num_hidden_layers=layers, num_attention_heads=_HEADS.get(hidden, max(1, hidden // 64)),
        num_channels=int(patch.shape[1]), image_size=grid * patch_size, patch_size=patch_size,
        hidden_act="quick_gelu" if hidden == 1024 else "gelu", layer_norm_eps=1e-5)


def build_clip_vision(sd: Mapping[str, torch.Tensor], path: Path, *, dtype: torch.dtype | None = None,
                      device: torch.device | str = "cpu") -> CLIPVisionModelWithProjection:
    """A CLIPVisionModelWithProjection filled with the file's weights (any layout); strict about what is missing."""
    weights = normalize_clip_vision(sd, path)
    config = clip_vision_config(weights, path)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    weights.pop("vision_model.embeddings.position_ids", None)
    expected = set(model.state_dict())
    missing = sorted(expected - set(weights) - {"vision_model.embeddings.position_ids"})
    if missing:
        raise ModelLoadError(path, f"CLIP vision weights are incomplete: {len(missing)} missing, e.g. {missing[0]!r}")
    model.load_state_dict({k: v for k, v in weights.items() if k in expected}, strict=False, assign=True)
    model.vision_model.embeddings.register_buffer(
        "position_ids", torch.arange((config.image_size // config.patch_size) ** 2 + 1).unsqueeze(0), persistent=False)
    model = model.to(device=device, dtype=dtype or next(iter(weights.values())).dtype)
    return model.eval().requires_grad_(False)


def preprocess(image: torch.Tensor, size: int = 224, *, crop: bool = True) -> torch.Tensor:
    """[B, H, W, C] image in 0..1 -> CLIP's [B, 3, size, size] normalised pixels (ComfyUI's clip_preprocess)."""
    image = image[..., :3].movedim(-1, 1).float()
    if image.shape[2] != size or image.shape[3] != size:
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            target = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            target = (size, size)
        image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    mean = torch.tensor(CLIP_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=image.device).view(1, 3, 1, 1)
    return (image - mean) / std


@torch.no_grad()
def encode_pixels(model: CLIPVisionModelWithProjection, pixels: torch.Tensor) -> ClipVisionOutput:
    """Run the tower on preprocessed pixels; tensors come back on the CPU in float32."""
    param = next(model.parameters())
    out = model(pixel_values=pixels.to(param.device, param.dtype), output_hidden_states=True)
    return ClipVisionOutput(image_embeds=out.image_embeds.float().cpu(),
                            last_hidden_state=out.last_hidden_state.float().cpu(),
                            penultimate_hidden_states=out.hidden_states[-2].float().cpu())


def encode_image(clip_vision: ClipVisionHandle, image: torch.Tensor, *, crop: bool = True) -> ClipVisionOutput:
    """CLIPVisionEncode: an IMAGE batch through the tower (on the compute device while it runs)."""
    pixels = preprocess(image, clip_vision.image_size, crop=crop)
    manager = clip_vision.manager
    if manager is None:
        return encode_pixels(clip_vision.model, pixels)
    with manager.use(clip_vision.model):
        return encode_pixels(clip_vision.model, pixels)


__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipVisionHandle", "ClipVisionOutput", "build_clip_vision", "clip_vision_config",
           "encode_image", "encode_pixels", "normalize_clip_vision", "open_clip_to_transformers", "preprocess"]
