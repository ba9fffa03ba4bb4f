"""The IPAdapter_plus pack's style and composition nodes: IPAdapterPreciseStyleTransfer,
IPAdapterPreciseComposition and IPAdapterStyleComposition (SDXL), on the same patch as IPAdapterAdvanced.

Style and composition act in different transformer blocks (nodes/models/ipadapter.py, layer_weights);
the precise variants also feed the other blocks the image as the negative side with an empty positive,
and IPAdapterStyleComposition gives the composition blocks a second image's tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from graph import BooleanInput, ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.models.ipadapter import COMBINE_METHODS, EMBEDS_SCALING

from .clip_vision_nodes import check_image
from .ipadapter_nodes import apply_ipadapter, encode, negative_embeds, unpack

_RANGE = [FloatInput(name="start_at", default=0.0, min=0.0, max=1.0, step=0.001),
          FloatInput(name="end_at", default=1.0, min=0.0, max=1.0, step=0.001),
          ComboInput(name="embeds_scaling", choices=EMBEDS_SCALING)]
_OPTIONAL = [InputSpec(name="image_negative", type="IMAGE", optional=True),
             InputSpec(name="attn_mask", type="MASK", optional=True),
             InputSpec(name="clip_vision", type="CLIP_VISION", optional=True)]


def _schema(node_type: str, display: str, category: str, inputs: list[Any]) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, inputs=inputs,
                      outputs=[OutputSpec(type="MODEL", name="MODEL")], python_module="nodes.sd.ipadapter_style_nodes")


def _embeds(node: str, ipadapter: Any, clip_vision: Any, image: torch.Tensor, image_negative: torch.Tensor | None
            ) -> tuple[Any, torch.Tensor, torch.Tensor]:
    adapter, vision = unpack(ipadapter, clip_vision, node)
    cond = encode(adapter, vision, check_image(image, node))
    negative = None if image_negative is None else check_image(image_negative, node, "image_negative")
    return adapter, cond, negative_embeds(adapter, vision, cond, negative)


class IPAdapterPreciseStyleTransfer(Node):
    SCHEMA = _schema("IPAdapterPreciseStyleTransfer", "IPAdapter Precise Style Transfer", "ipadapter",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="image", type="IMAGE"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=5.0, step=0.05),
                      FloatInput(name="style_boost", default=1.0, min=-5.0, max=5.0, step=0.05),
                      ComboInput(name="combine_embeds", choices=COMBINE_METHODS), *_RANGE, *_OPTIONAL])

    def execute(self, ctx, *, model: Any, ipadapter: Any, image: torch.Tensor, weight: float, style_boost: float,
                combine_embeds: str, start_at: float, end_at: float, embeds_scaling: str,
                image_negative: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                clip_vision: Any = None) -> tuple[Any]:
        adapter, cond, uncond = _embeds("IPAdapterPreciseStyleTransfer", ipadapter, clip_vision, image, image_negative)
        return (apply_ipadapter(model, adapter, cond, uncond, weight=weight, weight_type="style transfer precise",
                                weight_composition=style_boost, start_at=start_at, end_at=end_at,
                                combine_embeds=combine_embeds, embeds_scaling=embeds_scaling, attn_mask=attn_mask),)


class IPAdapterPreciseComposition(Node):
    SCHEMA = _schema("IPAdapterPreciseComposition", "IPAdapter Precise Composition", "ipadapter",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="image", type="IMAGE"),
                      FloatInput(name="weight", default=1.0, min=-1.0, max=5.0, step=0.05),
                      FloatInput(name="composition_boost", default=0.0, min=-5.0, max=5.0, step=0.05),
                      ComboInput(name="combine_embeds", choices=COMBINE_METHODS), *_RANGE, *_OPTIONAL])

    def execute(self, ctx, *, model: Any, ipadapter: Any, image: torch.Tensor, weight: float,
                composition_boost: float, combine_embeds: str, start_at: float, end_at: float, embeds_scaling: str,
                image_negative: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                clip_vision: Any = None) -> tuple[Any]:
        adapter, cond, uncond = _embeds("IPAdapterPreciseComposition", ipadapter, clip_vision, image, image_negative)
        return (apply_ipadapter(model, adapter, cond, uncond, weight=composition_boost,
                                weight_type="composition precise", weight_composition=weight, start_at=start_at,
                                end_at=end_at, combine_embeds=combine_embeds, embeds_scaling=embeds_scaling,
                                attn_mask=attn_mask),)


class IPAdapterStyleComposition(Node):
    SCHEMA = _schema("IPAdapterStyleComposition", "IPAdapter Style & Composition SDXL", "ipadapter/style_composition",
                     [InputSpec(name="model", type="MODEL"), InputSpec(name="ipadapter", type="IPADAPTER"),
                      InputSpec(name="image_style", type="IMAGE"), InputSpec(name="image_composition", type="IMAGE"),
                      FloatInput(name="weight_style", default=1.0, min=-1.0, max=5.0, step=0.05),
                      FloatInput(name="weight_composition", default=1.0, min=-1.0, max=5.0, step=0.05),
                      BooleanInput(name="expand_style", default=False),
                      ComboInput(name="combine_embeds", choices=COMBINE_METHODS, default="average"), *_RANGE,
                      *_OPTIONAL])

    def execute(self, ctx, *, model: Any, ipadapter: Any, image_style: torch.Tensor,
                image_composition: torch.Tensor, weight_style: float, weight_composition: float, expand_style: bool,
                combine_embeds: str, start_at: float, end_at: float, embeds_scaling: str,
                image_negative: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                clip_vision: Any = None) -> tuple[Any]:
        node = "IPAdapterStyleComposition"
        if not model.is_sdxl:
            raise ValueError(f"{node}: input 'model' must be an SDXL model (style + composition transfer is SDXL-only)")
        adapter, cond, uncond = _embeds(node, ipadapter, clip_vision, image_style, image_negative)
        vision = unpack(ipadapter, clip_vision, node)[1]
        composition = encode(adapter, vision, check_image(image_composition, node, "image_composition"))
        kind = "strong style and composition" if expand_style else "style and composition"
        return (apply_ipadapter(model, adapter, cond, uncond, weight=weight_style, weight_type=kind,
                                weight_composition=weight_composition, start_at=start_at, end_at=end_at,
                                combine_embeds=combine_embeds, embeds_scaling=embeds_scaling, attn_mask=attn_mask,
                                composition=composition),)


NODES = [IPAdapterPreciseStyleTransfer, IPAdapterPreciseComposition, IPAdapterStyleComposition]
