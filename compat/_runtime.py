"""What the shim modules read at call time: the bound plugin manager and the running node's context."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from graph.node import Folders
from plugins.comfy_v1_runtime import current_context

log = logging.getLogger("sumie.compat")

manager: Any = None


def bind(new_manager: Any) -> None:
    global manager
    manager = new_manager


def context() -> Any:
    """The NodeContext of the plugin node running now, or None (at import time, in a route handler)."""
    return current_context()


def folders() -> Folders:
    ctx = context()
    if ctx is not None and ctx.folders is not None:
        return ctx.folders
    if manager is not None and manager.folders is not None:
        return manager.folders
    return Folders.under(Path.cwd())


def services() -> dict[str, Any]:
    ctx = context()
    return dict(ctx.services) if ctx is not None else {}


def registry() -> Any:
    return manager.registry if manager is not None else None


def server_hooks() -> Any:
    return manager.server if manager is not None else None
