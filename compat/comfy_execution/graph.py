"""`comfy_execution.graph`: packs import `ExecutionBlocker` from here."""

from __future__ import annotations

from typing import Any

from .graph_utils import ExecutionBlocker


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'comfy_execution.graph' has no attribute {name!r}: ComfyUI's execution graph is "
                         "not provided by Sumie's compatibility layer (only ExecutionBlocker)")


__all__ = ["ExecutionBlocker"]
