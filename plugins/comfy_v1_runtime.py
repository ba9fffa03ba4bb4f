"""The run-time side of ComfyUI's V1 node protocol: the running node's context, coroutines, DYNPROMPT.

While a V1 function runs, `current_context()` is its `NodeContext`: the compatibility layer (compat/)
reports `ProgressBar` updates and interrupt checks through it. `async def` node functions run on a
per-thread event loop kept for plugin coroutines. Torch-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from graph.node import NodeContext
from graph.workflow import Link

# -- the running node's context -----------------------------------------------------------------------
_current: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("sumie_v1_ctx", default=None)
_last_active: list[NodeContext] = []  # for threads a pack starts itself (context variables do not follow)


def current_context() -> NodeContext | None:
    """The context of the plugin node running now (in this thread, else the latest one still running)."""
    ctx = _current.get()
    if ctx is None and _last_active:
        ctx = _last_active[-1]
    return ctx


@contextlib.contextmanager
def running(ctx: NodeContext) -> Iterator[None]:
    token = _current.set(ctx)
    _last_active.append(ctx)
    try:
        yield
    finally:
        _current.reset(token)
        with contextlib.suppress(ValueError):
            _last_active.remove(ctx)


# -- coroutines -----------------------------------------------------------------------------------------
_loops = threading.local()


def run_coroutine(awaitable: Any) -> Any:
    """Run an `async def` node function to completion from the (synchronous) run thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called from inside a running loop: use a helper thread with its own loop
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = run_coroutine(awaitable)
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        helper = threading.Thread(target=work, name="sumie-v1-async")
        helper.start()
        helper.join()
        if "error" in box:
            raise box["error"]
        return box["value"]
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()  # kept: packs may cache loop-bound sessions
    return loop.run_until_complete(awaitable)


# -- DYNPROMPT ------------------------------------------------------------------------------------------
class DynamicPrompt:
    """A read-only view of the live graph (expansions included), shaped like ComfyUI's DYNPROMPT."""

    def __init__(self, nodes: Mapping[str, Any]) -> None:
        self._nodes = nodes

    def has_node(self, node_id: str) -> bool:
        return node_id in self._nodes

    def all_node_ids(self) -> list[str]:
        return list(self._nodes)

    def get_node(self, node_id: str) -> dict[str, Any]:
        node = self._nodes.get(node_id)
        if node is None:
            raise KeyError(f"node {node_id} is not in the prompt")
        inputs = {k: [v.node_id, v.output_index] if type(v) is Link else v for k, v in node.inputs.items()}
        return {"class_type": node.class_type, "inputs": inputs}


__all__ = ["DynamicPrompt", "current_context", "run_coroutine", "running"]
