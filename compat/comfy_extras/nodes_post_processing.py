"""`comfy_extras.nodes_post_processing`: post-processing nodes, as the engine's built-in nodes (ComfyUI's
class names differ from the node ids: Blend is ImageBlend)."""

from __future__ import annotations

from typing import Any

from ._facades import node_attribute

NODES = {
    "Blend": "ImageBlend", "Blur": "ImageBlur", "Quantize": "ImageQuantize", "Sharpen": "ImageSharpen",
    "ImageScaleToTotalPixels": "ImageScaleToTotalPixels"}


def __getattr__(name: str) -> Any:
    return node_attribute(__name__, NODES, name)
