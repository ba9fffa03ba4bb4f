"""`comfy_extras.nodes_align_your_steps`: the Align Your Steps schedule, as the engine's built-in nodes."""

from __future__ import annotations

from typing import Any

from ._facades import node_attribute

NODES = {name: name for name in ("AlignYourStepsScheduler",)}


def __getattr__(name: str) -> Any:
    return node_attribute(__name__, NODES, name)
