"""CLIP vision and style-model nodes: CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply.

Loads are owned by the model manager (cached by file identity, placed on the compute device only while
they run), like the checkpoint loaders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, resolve
from nodes.models.clip_vision import ClipVisionHandle, ClipVisionOutput, build_clip_vision, encode_image
from nodes.models.style_model import StyleAdapter, build_style_model
from nodes.models.weights_file import read_state_dict

from .loaders import file_fingerprint


def _schema(node_type: str, display: str, category: str, inputs: list[Any], outputs: list[OutputSpec]) -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=category, inputs=inputs, outputs=outputs,
                      python_module="nodes.sd.clip_vision_nodes")


def _resolve(ctx: Any, kind: str, name: str, input_name: str) -> Path:
    ctx.check_interrupt()
    try:
        return resolve(ctx.folders, kind, name)
    except ModelLoadError as exc:
        raise ModelLoadError(exc.path, f"input '{input_name}': {exc.reason}") from None


def load_clip_vision(manager: Any, path: Path) -> ClipVisionHandle:
    """A CLIP_VISION handle of a file, cached by the model manager (its dtype, its devices)."""
    def load(p: Path) -> tuple[ClipVisionHandle, list[torch.nn.Module]]:
        model = build_clip_vision(read_state_dict(p), p, dtype=manager.dtype, device=manager.offload_device)
        return ClipVisionHandle(model=model, source=p, manager=manager), [model]

    return manager.load_file("clip_vision", path, load)


def check_image(image: Any, node: str, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: input '{name}' must be an IMAGE [batch, height, width, channels]")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    return image


class CLIPVisionLoader(Node):
    SCHEMA = _schema("CLIPVisionLoader", "Load CLIP Vision", "loaders",
                     [ComboInput(name="clip_name", choices=files_of("clip_vision"))],
                     [OutputSpec(type="CLIP_VISION", name="CLIP_VISION")])

    def fingerprint(self, *, clip_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "clip_vision", clip_name)

    def execute(self, ctx, *, clip_name: str) -> tuple[ClipVisionHandle]:
        path = _resolve(ctx, "clip_vision", clip_name, "clip_name")
        try:
            return (load_clip_vision(ctx.service("models"), path),)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'clip_name' = {clip_name!r})") from None

    def prefetch(self, ctx, *, clip_name: str) -> str:
        path = _resolve(ctx, "clip_vision", clip_name, "clip_name")
        manager = ctx.service("models")
        return manager.prefetch([path], lambda: load_clip_vision(manager, path))


class CLIPVisionEncode(Node):
    SCHEMA = _schema("CLIPVisionEncode", "CLIP Vision Encode", "conditioning",
                     [InputSpec(name="clip_vision", type="CLIP_VISION"), InputSpec(name="image", type="IMAGE"),
                      ComboInput(name="crop", choices=("center", "none"), default="center")],
                     [OutputSpec(type="CLIP_VISION_OUTPUT", name="CLIP_VISION_OUTPUT")])

    def execute(self, ctx, *, clip_vision: ClipVisionHandle, image: torch.Tensor, crop: str = "center"
                ) -> tuple[ClipVisionOutput]:
        image = check_image(image, "CLIPVisionEncode")
        return (encode_image(clip_vision, image, crop=crop == "center"),)


class StyleModelLoader(Node):
    SCHEMA = _schema("StyleModelLoader", "Load Style Model", "loaders",
                     [ComboInput(name="style_model_name", choices=files_of("style_models"))],
                     [OutputSpec(type="STYLE_MODEL", name="STYLE_MODEL")])

    def fingerprint(self, *, style_model_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "style_models", style_model_name)

    def execute(self, ctx, *, style_model_name: str) -> tuple[StyleAdapter]:
        path = _resolve(ctx, "style_models", style_model_name, "style_model_name")

        def load(p: Path) -> tuple[StyleAdapter, list[torch.nn.Module]]:
            model = build_style_model(read_state_dict(p), p)
            return model, [model]

        try:
            return (ctx.service("models").load_file("style_model", path, load),)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'style_model_name' = {style_model_name!r})") from None


class StyleModelApply(Node):
    SCHEMA = _schema("StyleModelApply", "Apply Style Model", "conditioning/style_model",
                     [InputSpec(name="conditioning", type="CONDITIONING"),
                      InputSpec(name="style_model", type="STYLE_MODEL"),
                      InputSpec(name="clip_vision_output", type="CLIP_VISION_OUTPUT"),
                      FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.001),
                      ComboInput(name="strength_type", choices=("multiply", "attn_bias"), default="multiply")],
                     [OutputSpec(type="CONDITIONING", name="CONDITIONING")])

    def execute(self, ctx, *, conditioning: list[Any], style_model: StyleAdapter, clip_vision_output: Any,
                strength: float = 1.0, strength_type: str = "multiply") -> tuple[list[Any]]:
        if strength_type == "attn_bias" and not math.isclose(strength, 1.0):
            raise ValueError("StyleModelApply: input 'strength_type' = 'attn_bias' needs attention masks in the "
                             "cross-attention, which Sumie's sampler does not apply; use 'multiply'")
        hidden = clip_vision_output["last_hidden_state"]
        if hidden.shape[-1] != style_model.style_embedding.shape[-1]:
            raise ValueError(f"StyleModelApply: input 'clip_vision_output' has width {hidden.shape[-1]}; this style "
                             f"model needs {style_model.style_embedding.shape[-1]} (encode with CLIP ViT-L)")
        with torch.no_grad():
            tokens = style_model(hidden.float()).flatten(0, 1).unsqueeze(0)
        if strength_type == "multiply":
            tokens = tokens * strength
        out = []
        for item in conditioning:
            cond = item[0]
            if cond.shape[-1] != tokens.shape[-1]:
                raise ValueError(f"StyleModelApply: the style tokens are {tokens.shape[-1]} wide but input "
                                 f"'conditioning' is {cond.shape[-1]} wide (the style adapter is for SD1 models)")
            extra = tokens.to(cond).expand(cond.shape[0], -1, -1)
            out.append([torch.cat([cond, extra], dim=1), dict(item[1])])
        return (out,)


NODES = [CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply]
