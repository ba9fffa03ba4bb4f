"""`server.PromptServer` for ComfyUI packs: `PromptServer.instance` with `send_sync`, `routes`, `client_id`.

Messages go to the engine's websocket hub once the server is running (the server attaches itself to
the plugin manager); before that, or in `main.py run`, they are dropped. Routes packs add to
`PromptServer.instance.routes` (or through `.app`) are served under their path and under /api, after
the engine's own routes (a pack cannot replace those); they are collected at start-up, so a route
added later needs a restart.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from aiohttp import web

from . import _runtime

log = logging.getLogger("sumie.compat.server")


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3


class _Router:
    """`PromptServer.instance.app.router` before the app exists: records routes into the table."""

    def __init__(self, routes: web.RouteTableDef) -> None:
        self._routes = routes

    def add_route(self, method: str, path: str, handler: Any, **kwargs: Any) -> None:
        self._routes.route(method, path, **kwargs)(handler)

    def add_get(self, path: str, handler: Any, **kwargs: Any) -> None:
        kwargs.pop("allow_head", None)
        self.add_route("GET", path, handler, **kwargs)

    def add_post(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("POST", path, handler, **kwargs)

    def add_put(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("PUT", path, handler, **kwargs)

    def add_delete(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("DELETE", path, handler, **kwargs)

    def add_static(self, prefix: str, path: Any, **kwargs: Any) -> None:
        self._routes.static(prefix, str(path), **kwargs)


class _App:
    def __init__(self, routes: web.RouteTableDef) -> None:
        self.router = _Router(routes)
        self._routes = routes

    def add_routes(self, routes: Any) -> None:
        for route in routes:
            self._routes._items.append(route)


class _Queue:
    """`PromptServer.instance.prompt_queue`, for packs that only peek at it."""

    def get_current_queue(self) -> tuple[list[Any], list[Any]]:
        return [], []

    def get_tasks_remaining(self) -> int:
        return 0


class PromptServer:
    instance: PromptServer

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.app = _App(self.routes)
        self.prompt_queue = _Queue()
        self.supports = ["custom_nodes_from_web"]
        self.number = 0
        self.last_node_id: str | None = None

    @property
    def client_id(self) -> str | None:
        hooks = _runtime.server_hooks()
        return hooks.client_id() if hooks is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        hooks = _runtime.server_hooks()
        return hooks.prompt_id() if hooks is not None else None

    @property
    def loop(self) -> Any:
        hooks = _runtime.server_hooks()
        return getattr(hooks, "loop", None)

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to `sid` (everyone when None); bytes go as a binary frame."""
        hooks = _runtime.server_hooks()
        if hooks is None:
            log.debug("send_sync(%r) with no server running: dropped", event)
            return
        if isinstance(data, (bytes, bytearray)):
            hooks.send_binary(struct.pack(">I", int(event)) + bytes(data), sid)
            return
        if isinstance(event, int):
            log.debug("binary event %d without bytes: dropped", event)
            return
        hooks.send(str(event), data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        self.send_sync("progress_text", {"node": node_id, "text": text}, sid if sid is not None else self.client_id)

    def add_on_prompt_handler(self, handler: Any) -> None:
        log.warning("a plugin registered an on_prompt handler; Sumie does not call those")


PromptServer.instance = PromptServer()

__all__ = ["BinaryEventTypes", "PromptServer"]
