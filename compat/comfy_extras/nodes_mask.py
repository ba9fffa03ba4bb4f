"""`comfy_extras.nodes_mask`: the mask nodes, and `composite` (paste a source into a destination)."""

from __future__ import annotations

from typing import Any

from nodes.sd.mask_nodes import paste_masked

from ._facades import node_attribute

NODES = {name: name for name in (
    "LatentCompositeMasked", "ImageCompositeMasked", "MaskToImage", "ImageToMask", "SolidMask", "InvertMask",
    "CropMask", "MaskComposite", "FeatherMask", "GrowMask", "ThresholdMask")}


def composite(destination: Any, source: Any, x: int, y: int, mask: Any = None, multiplier: int = 8,
              resize_source: bool = False) -> Any:
    """[B, C, H, W] source pasted at (x, y) (pixels; `multiplier` 8 for latents) weighted by mask; a new tensor."""
    return paste_masked(destination, source, int(x), int(y), mask, multiplier=multiplier,
                        resize_source=resize_source)


def __getattr__(name: str) -> Any:
    return node_attribute(__name__, NODES, name)


__all__ = ["composite"]
