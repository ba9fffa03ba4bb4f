"""`comfy_extras.nodes_latent`: latent math nodes, as the engine's built-in nodes."""

from __future__ import annotations

from typing import Any

from ._facades import node_attribute

NODES = {name: name for name in ("LatentAdd", "LatentSubtract", "LatentMultiply", "LatentInterpolate", "LatentBatch")}


def __getattr__(name: str) -> Any:
    return node_attribute(__name__, NODES, name)
