"""`comfy_execution.graph_utils.ExecutionBlocker` (see the package docstring for what Sumie does with it)."""

from __future__ import annotations

from typing import Any


class ExecutionBlocker:
    """An output value meaning "do not run what depends on this" (with an optional message)."""

    def __init__(self, message: Any) -> None:
        self.message = message


def is_execution_blocker(value: Any) -> bool:
    return type(value).__name__ == "ExecutionBlocker" and hasattr(value, "message")


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'comfy_execution.graph_utils' has no attribute {name!r}: Sumie's compatibility "
                         "layer provides only ExecutionBlocker there")


__all__ = ["ExecutionBlocker", "is_execution_blocker"]
