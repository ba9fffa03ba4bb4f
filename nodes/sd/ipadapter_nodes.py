"""IP-Adapter nodes with the class names, inputs and outputs of the IPAdapter_plus pack's saved workflows.

IPAdapterModelLoader / IPAdapterUnifiedLoader load an IPADAPTER (the unified loader's is the pack's
pipeline dict, {"ipadapter": {"file", "model"}, "clipvision": {"file", "model"}, ...}, so packs reading
it keep working); IPAdapter, IPAdapterAdvanced and IPAdapterEmbeds return the MODEL with an
IP-Adapter patch (nodes/models/ipadapter.py), applied only while a sampler runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from graph import ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, list_files, resolve
from nodes.models.clip_vision import ClipVisionHandle, encode_image, encode_pixels, preprocess
from nodes.models.ipadapter import (
    COMBINE_METHODS,
    EMBEDS_SCALING,
    WEIGHT_TYPES,
    IPAdapterModel,
    IPAdapterPatch,
    build_ipadapter,
    layer_weights,
    project,
)
from nodes.models.weights_file import read_state_dict

from .clip_vision_nodes import check_image, load_clip_vision
from .loaders import file_fingerprint

PRESETS = ("LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
           "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)")
_EXT = r"\.(safetensors|bin)$"


def _schema(node_type: str, display: str, category: str, inputs: list[Any], outputs: list[OutputSpec]) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, inputs=inputs, outputs=outputs,
                      python_module="nodes.sd.ipadapter_nodes")


def load_ipadapter(manager: Any, path: Path) -> IPAdapterModel:
    """An IPADAPTER of a file, cached by the model manager; its projection runs on the compute device."""
    def load(p: Path) -> tuple[IPAdapterModel, list[torch.nn.Module]]:
        adapter = build_ipadapter(read_state_dict(p, nested=True), p, dtype=manager.dtype)
        adapter = IPAdapterModel(projection=adapter.projection, kv=adapter.kv, plus=adapter.plus, source=p,
                                 manager=manager)
        return adapter, [adapter.projection]

    return manager.load_file("ipadapter", path, load)


def preset_files(preset: str, sdxl: bool) -> tuple[str, str]:
    """(clip_vision pattern, ipadapter pattern) of a unified-loader preset, as the pack names its files."""
    p = preset.lower()
    if p.startswith("vit-g"):
        vision = r"(ViT.bigG.14.*39B.b160k|ipadapter.*sdxl|sdxl.*model)\.(bin|safetensors)"
    else:
        vision = r"(ViT.H.14.*s32B.b79K|ipadapter.*sd15|sd1.?5.*model)\.(bin|safetensors)"
    if p.startswith("light"):
        if sdxl:
            raise ValueError("IPAdapterUnifiedLoader: the LIGHT preset has no SDXL model")
        return vision, r"sd15.light.v11" + _EXT
    if p.startswith("standard"):
        return vision, (r"ip.adapter.sdxl.vit.h" if sdxl else r"ip.adapter.sd15") + _EXT
    if p.startswith("vit-g"):
        return vision, (r"ip.adapter.sdxl" if sdxl else r"sd15.vit.g") + _EXT
    if p.startswith("plus ("):
        return vision, (r"plus.sdxl.vit.h" if sdxl else r"ip.adapter.plus.sd15") + _EXT
    if p.startswith("plus face"):
        return vision, (r"plus.face.sdxl.vit.h" if sdxl else r"plus.face.sd15") + _EXT
    if p.startswith("full"):
        if sdxl:
            raise ValueError("IPAdapterUnifiedLoader: the FULL FACE preset has no SDXL model")
        return vision, r"full.face.sd15" + _EXT
    raise ValueError(f"IPAdapterUnifiedLoader: input 'preset' = {preset!r} is not one of {', '.join(PRESETS)}")


def _find(folders: Any, kind: str, pattern: str, what: str) -> str:
    names = [n for n in list_files(folders, kind) if re.search(pattern, n, re.IGNORECASE)]
    if not names and what == "ipadapter" and "light.v11" in pattern:  # the pack falls back to the first LIGHT
        names = [n for n in list_files(folders, kind) if re.search(r"sd15.light" + _EXT, n, re.IGNORECASE)]
    if not names:
        raise ModelLoadError(None, f"IPAdapterUnifiedLoader: no {what} file in models/{kind} matches "
                                   f"{pattern!r} (name your files as the IPAdapter_plus pack documents)")
    return names[0]


def unpack(ipadapter: Any, clip_vision: Any, node: str, *, need_vision: bool = True
           ) -> tuple[IPAdapterModel, ClipVisionHandle | None]:
    """The adapter and CLIP vision of an IPADAPTER input (a loaded model or the unified loader's pipeline)."""
    if isinstance(ipadapter, dict) and "ipadapter" in ipadapter:
        adapter = ipadapter["ipadapter"]["model"]
        clip_vision = clip_vision if clip_vision is not None else ipadapter.get("clipvision", {}).get("model")
    else:
        adapter = ipadapter
    if not isinstance(adapter, IPAdapterModel):
        raise ValueError(f"{node}: input 'ipadapter' is not an IP-Adapter model")
    if clip_vision is None and need_vision:
        raise ValueError(f"{node}: a CLIP vision model is needed: connect input 'clip_vision' or load the "
                         "IP-Adapter with IPAdapterUnifiedLoader")
    return adapter, clip_vision


# ---------------------------------------------------------------------------------- encoding

def encode(adapter: IPAdapterModel, clip_vision: ClipVisionHandle, image: torch.Tensor,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """The CLIP vision embedding the adapter reads: penultimate hidden states (plus) or image_embeds."""
    if mask is None:
        out = encode_image(clip_vision, image)
    else:
        pixels = preprocess(image, clip_vision.image_size) * mask.to(torch.float32)[:, None]
        if clip_vision.manager is None:
            out = encode_pixels(clip_vision.model, pixels)
        else:
            with clip_vision.manager.use(clip_vision.model):
                out = encode_pixels(clip_vision.model, pixels)
    return out.penultimate_hidden_states if adapter.plus else out.image_embeds


def negative_embeds(adapter: IPAdapterModel, clip_vision: ClipVisionHandle | None, like: torch.Tensor,
                    image_negative: torch.Tensor | None = None) -> torch.Tensor:
    """The negative side: the negative image's embedding, else a black image's (plus) or zeros."""
    if image_negative is not None:
        return encode(adapter, clip_vision, image_negative)
    if adapter.plus:
        if clip_vision is None:
            raise ValueError("a plus IP-Adapter needs a CLIP vision model to encode its negative image")
        size = clip_vision.image_size
        return encode(adapter, clip_vision, torch.zeros(1, size, size, 3))
    return torch.zeros_like(like)


def combine(embeds: torch.Tensor, method: str) -> torch.Tensor:
    """Several images' embeddings as one (the pack's combine_embeds / IPAdapterCombineEmbeds methods)."""
    if method == "concat" or embeds.shape[0] < 2:
        return embeds
    if method == "add":
        return embeds.sum(dim=0, keepdim=True)
    if method == "subtract":
        return (embeds[0] - embeds[1:].mean(dim=0))[None]
    if method == "average":
        return embeds.mean(dim=0, keepdim=True)
    if method == "norm average":
        return (embeds / embeds.norm(dim=0, keepdim=True)).mean(dim=0, keepdim=True)
    if method == "max":
        return embeds.max(dim=0).values[None]
    if method == "min":
        return embeds.min(dim=0).values[None]
    raise ValueError(f"unknown combine method {method!r}")


def _to_size(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[0] < size:
        return torch.cat([t, t[-1:].repeat(size - t.shape[0], *[1] * (t.ndim - 1))])
    return t[:size]


def apply_ipadapter(model: Any, adapter: IPAdapterModel, cond: torch.Tensor, uncond: torch.Tensor, *,
                    weight: float, weight_type: str, start_at: float, end_at: float, combine_embeds: str = "concat",
                    embeds_scaling: str = "V only", attn_mask: torch.Tensor | None = None,
                    weight_composition: float | None = None, composition: torch.Tensor | None = None) -> Any:
    """The MODEL with one more IP-Adapter patch (the model itself when every weight is 0: exactly the base).

    `weight_composition` defaults to `weight` for the precise types and 1 otherwise, as the pack does;
    `composition` are the embeddings of a separate composition image (style and composition)."""
    if weight_composition is None:
        weight_composition = weight if weight_type.endswith("precise") else 1.0
    per_layer = layer_weights(weight, weight_type, model.is_sdxl, weight_composition)
    if (per_layer is None and weight == 0) or (per_layer is not None and not any(per_layer.values())):
        return model
    uncond = _to_size(uncond, cond.shape[0])
    if combine_embeds != "concat" and cond.shape[0] > 1:
        cond, uncond = combine(cond, combine_embeds), uncond[:1]
    device = model.manager.device if model.manager is not None else torch.device("cpu")
    tokens, negative = project(adapter, cond, device), project(adapter, uncond, device)
    mask = None if attn_mask is None else (attn_mask[None] if attn_mask.ndim == 2 else attn_mask).float()
    alt = None
    if composition is not None:
        if combine_embeds != "concat" and composition.shape[0] > 1:
            composition = combine(composition, combine_embeds)
        alt = project(adapter, composition, device)
        alt = alt.reshape(1, -1, alt.shape[-1])
    patch = IPAdapterPatch(
        adapter=adapter, cond=tokens.reshape(1, -1, tokens.shape[-1]), uncond=negative.reshape(1, -1, tokens.shape[-1]),
        weight=float(weight), weight_type=weight_type, sdxl=model.is_sdxl, embeds_scaling=embeds_scaling,
        sigma_start=model.sampling.percent_to_sigma(start_at), sigma_end=model.sampling.percent_to_sigma(end_at),
        weight_composition=weight_composition, mask=mask, cond_alt=alt)
    return model.with_patches(patch)


# ---------------------------------------------------------------------------------- nodes

class IPAdapterModelLoader(Node):
    SCHEMA = _schema("IPAdapterModelLoader", "IPAdapter Model Loader", "ipadapter/loaders",
                     [ComboInput(name="ipadapter_file", choices=files_of("ipadapter"))],
                     [OutputSpec(type="IPADAPTER", name="IPADAPTER")])

    def fingerprint(self, *, ipadapter_file: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "ipadapter", ipadapter_file)

    def execute(self, ctx, *, ipadapter_file: str) -> tuple[IPAdapterModel]:
        ctx.check_interrupt()
        try:
            return (load_ipadapter(ctx.service("models"), resolve(ctx.folders, "ipadapter", ipadapter_file)),)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'ipadapter_file' = {ipadapter_file!r})") from None


class IPAdapterUnifiedLoader(Node):
    SCHEMA = _schema("IPAdapterUnifiedLoader", "IPAdapter Unified Loader", "ipadapter",
                     [InputSpec(name="model", type="MODEL"), ComboInput(name="preset", choices=PRESETS),
                      InputSpec(name="ipadapter", type="IPADAPTER", optional=True)],
                     [OutputSpec(type="MODEL", name="model"), OutputSpec(type="IPADAPTER", name="ipadapter")])

    def fingerprint(self, *, preset: str = "", folders: Any = None, **_: Any) -> Any:
        if folders is None:
            return preset
        stamps = [file_fingerprint(folders, kind, n) for kind in ("ipadapter", "clip_vision")
                  for n in list_files(folders, kind)]
        return [preset, stamps]

    def execute(self, ctx, *, model: Any, preset: str, ipadapter: Any = None) -> tuple[Any, dict[str, Any]]:
        vision_pattern, adapter_pattern = preset_files(preset, model.is_sdxl)
        vision_name = _find(ctx.folders, "clip_vision", vision_pattern, "CLIP vision")
        adapter_name = _find(ctx.folders, "ipadapter", adapter_pattern, "ipadapter")
        manager = ctx.service("models")
        pipeline = dict(ipadapter) if isinstance(ipadapter, dict) else {}
        vision_path = resolve(ctx.folders, "clip_vision", vision_name)
        adapter_path = resolve(ctx.folders, "ipadapter", adapter_name)
        pipeline["clipvision"] = {"file": str(vision_path), "model": load_clip_vision(manager, vision_path)}
        pipeline["ipadapter"] = {"file": str(adapter_path), "model": load_ipadapter(manager, adapter_path)}
        pipeline.setdefault("insightface", {"provider": None, "model": None})
        return model, pipeline


_APPLY_COMMON = [FloatInput(name="start_at", default=0.0, min=0.0, max=1.0, step=0.001),
                 FloatInput(name="end_at", default=1.0, min=0.0, max=1.0, step=0.001)]


class IPAdapter(Node):
    SCHEMA = _schema("IPAdapter", "IPAdapter", "ipadapter",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="image", type="IMAGE"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=3.0, step=0.05), *_APPLY_COMMON,
                      ComboInput(name="weight_type", choices=("standard", "prompt is more important",
                                                              "style transfer")),
                      InputSpec(name="attn_mask", type="MASK", optional=True)],
                     [OutputSpec(type="MODEL", name="MODEL")])

    def execute(self, ctx, *, model: Any, ipadapter: Any, image: torch.Tensor, weight: float, start_at: float,
                end_at: float, weight_type: str, attn_mask: torch.Tensor | None = None) -> tuple[Any]:
        if not (isinstance(ipadapter, dict) and "clipvision" in ipadapter):
            raise ValueError("IPAdapter: input 'ipadapter' must come from IPAdapterUnifiedLoader (it carries the "
                             "CLIP vision model); use IPAdapterAdvanced with a clip_vision input otherwise")
        kind = ("style transfer" if weight_type.startswith("style") else
                "ease out" if weight_type == "prompt is more important" else "linear")
        adapter, vision = unpack(ipadapter, None, "IPAdapter")
        if weight == 0:
            return (model,)
        cond = encode(adapter, vision, check_image(image, "IPAdapter"))
        return (apply_ipadapter(model, adapter, cond, negative_embeds(adapter, vision, cond), weight=weight,
                                weight_type=kind, start_at=start_at, end_at=end_at, attn_mask=attn_mask),)


class IPAdapterAdvanced(Node):
    SCHEMA = _schema("IPAdapterAdvanced", "IPAdapter Advanced", "ipadapter",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="image", type="IMAGE"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=5.0, step=0.05),
                      ComboInput(name="weight_type", choices=WEIGHT_TYPES),
                      ComboInput(name="combine_embeds", choices=COMBINE_METHODS), *_APPLY_COMMON,
                      ComboInput(name="embeds_scaling", choices=EMBEDS_SCALING),
                      InputSpec(name="image_negative", type="IMAGE", optional=True),
                      InputSpec(name="attn_mask", type="MASK", optional=True),
                      InputSpec(name="clip_vision", type="CLIP_VISION", optional=True)],
                     [OutputSpec(type="MODEL", name="MODEL")])

    def execute(self, ctx, *, model: Any, ipadapter: Any, image: torch.Tensor, weight: float, weight_type: str,
                combine_embeds: str, start_at: float, end_at: float, embeds_scaling: str,
                image_negative: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                clip_vision: Any = None) -> tuple[Any]:
        adapter, vision = unpack(ipadapter, clip_vision, "IPAdapterAdvanced")
        if weight == 0:
            return (model,)
        cond = encode(adapter, vision, check_image(image, "IPAdapterAdvanced"))
        negative = None if image_negative is None else check_image(image_negative, "IPAdapterAdvanced",
                                                                   "image_negative")
        uncond = negative_embeds(adapter, vision, cond, negative)
        return (apply_ipadapter(model, adapter, cond, uncond, weight=weight, weight_type=weight_type,
                                start_at=start_at, end_at=end_at, combine_embeds=combine_embeds,
                                embeds_scaling=embeds_scaling, attn_mask=attn_mask),)


class IPAdapterEmbeds(Node):
    SCHEMA = _schema("IPAdapterEmbeds", "IPAdapter Embeds", "ipadapter/embeds",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="pos_embed", type="EMBEDS"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=3.0, step=0.05),
                      ComboInput(name="weight_type", choices=WEIGHT_TYPES), *_APPLY_COMMON,
                      ComboInput(name="embeds_scaling", choices=EMBEDS_SCALING),
                      InputSpec(name="neg_embed", type="EMBEDS", optional=True),
                      InputSpec(name="attn_mask", type="MASK", optional=True),
                      InputSpec(name="clip_vision", type="CLIP_VISION", optional=True)],
                     [OutputSpec(type="MODEL", name="MODEL")])

    def execute(self, ctx, *, model: Any, ipadapter: Any, pos_embed: torch.Tensor, weight: float, weight_type: str,
                start_at: float, end_at: float, embeds_scaling: str, neg_embed: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, clip_vision: Any = None) -> tuple[Any]:
        adapter, vision = unpack(ipadapter, clip_vision, "IPAdapterEmbeds", need_vision=neg_embed is None)
        if weight == 0:
            return (model,)
        uncond = neg_embed if neg_embed is not None else negative_embeds(adapter, vision, pos_embed)
        return (apply_ipadapter(model, adapter, pos_embed, uncond, weight=weight, weight_type=weight_type,
                                start_at=start_at, end_at=end_at, embeds_scaling=embeds_scaling,
                                attn_mask=attn_mask),)


class IPAdapterEncoder(Node):
    SCHEMA = _schema("IPAdapterEncoder", "IPAdapter Encoder", "ipadapter/embeds",
                     [InputSpec(name="ipadapter", type="IPADAPTER"), InputSpec(name="image", type="IMAGE"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=3.0, step=0.01),
                      InputSpec(name="mask", type="MASK", optional=True),
                      InputSpec(name="clip_vision", type="CLIP_VISION", optional=True)],
                     [OutputSpec(type="EMBEDS", name="pos_embed"), OutputSpec(type="EMBEDS", name="neg_embed")])

    def execute(self, ctx, *, ipadapter: Any, image: torch.Tensor, weight: float, mask: torch.Tensor | None = None,
                clip_vision: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        adapter, vision = unpack(ipadapter, clip_vision, "IPAdapterEncoder")
        size = vision.image_size
        if mask is not None:
            mask = mask[None] if mask.ndim == 2 else mask
            if tuple(mask.shape[1:]) != (size, size):  # centre square, then bicubic to the encoder's size
                side = min(mask.shape[1], mask.shape[2])
                top, left = (mask.shape[1] - side) // 2, (mask.shape[2] - side) // 2
                square = mask[:, None, top:top + side, left:left + side].float()
                mask = F.interpolate(square, size=(size, size), mode="bicubic", antialias=True)[:, 0]
        cond = encode(adapter, vision, check_image(image, "IPAdapterEncoder"), mask)
        uncond = negative_embeds(adapter, vision, cond)
        return (cond * weight if weight != 1 else cond), uncond


class IPAdapterCombineEmbeds(Node):
    SCHEMA = _schema("IPAdapterCombineEmbeds", "IPAdapter Combine Embeds", "ipadapter/embeds",
                     [InputSpec(name="embed1", type="EMBEDS"),
                      ComboInput(name="method", choices=(*COMBINE_METHODS, "max", "min")),
                      *[InputSpec(name=f"embed{i}", type="EMBEDS", optional=True) for i in range(2, 6)]],
                     [OutputSpec(type="EMBEDS", name="EMBEDS")])

    def execute(self, ctx, *, embed1: torch.Tensor, method: str, embed2: torch.Tensor | None = None,
                embed3: torch.Tensor | None = None, embed4: torch.Tensor | None = None,
                embed5: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        given = [e for e in (embed1, embed2, embed3, embed4, embed5) if e is not None]
        if method == "concat" and len(given) == 1:
            return (embed1,)
        if len({tuple(e.shape[1:]) for e in given}) > 1:
            raise ValueError("IPAdapterCombineEmbeds: the embeds come from different encoders (their shapes differ)")
        embeds = torch.cat(given)
        return (embeds if method == "concat" else combine(embeds, method),)


NODES = [IPAdapterModelLoader, IPAdapterUnifiedLoader, IPAdapter, IPAdapterAdvanced, IPAdapterEmbeds,
         IPAdapterEncoder, IPAdapterCombineEmbeds]
