"""Plugin routes and wiring: GET /plugins, the packs' web files, pack routes, and the server hooks
the compatibility layer's `PromptServer` talks to (send to the websocket, the running client id).

The server only talks to the plugin report create_app was given (`state.plugins`: a
plugins.manager.PluginManager, or None when plugins are off); it never imports plugins/ or compat/.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .api_files import static_response
from .files import PathError, list_files, resolve_file, split_relative
from .state import STATE, ServerState, state_of
from .wire import dumps

log = logging.getLogger("sumie.plugins.server")


async def get_plugins(request: web.Request) -> web.Response:
    """Every pack with its status, nodes, conflicts and errors; `failed` also lists built-in modules."""
    state = state_of(request)
    registry, manager = state.registry, state.plugins
    body: dict[str, Any] = manager.to_json() if manager is not None else {
        "api_version": None, "enabled": False, "dirs": [], "allow": None, "reload": False, "packs": []}
    body["failed"] = [{"name": p.name, "error": p.error, "node_names": list(p.node_names)}
                      for p in registry.failed_packs]
    return web.json_response(body, dumps=dumps)


def web_dirs(state: ServerState) -> dict[str, Path]:
    """Pack name -> web folder: the plugin manager's (live, so reloaded packs show) over the app's own."""
    dirs = {name: Path(d) for name, d in state.web_dirs.items()}
    manager = state.plugins
    if manager is not None:
        for name in manager.reports:
            dirs.pop(name, None)
        dirs.update({name: Path(d) for name, d in manager.web_dirs.items()})
    return dirs


async def get_extensions(request: web.Request) -> web.Response:
    """URLs of the JavaScript files packs ship in their WEB_DIRECTORY."""
    urls: list[str] = []
    for pack, directory in sorted(web_dirs(state_of(request)).items()):
        for rel in list_files(directory, recurse=True):
            if rel.suffix in (".js", ".mjs"):
                urls.append(f"/extensions/{quote(pack)}/{quote(rel.as_posix())}")
    return web.json_response(urls)


async def get_extension_file(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    pack = request.match_info["pack"]
    directory = web_dirs(state).get(pack)
    if directory is None and state.web_root is not None and split_relative(pack, "extension"):
        # The served editor's own files under extensions/ (ComfyUI's editor keeps modules there that
        # plugins' scripts import, e.g. extensions/core/widgetInputs.js).
        own = state.web_root / "extensions" / pack
        directory = own if own.is_dir() else None
    if directory is None:
        raise PathError(f"no extension named {pack[:60]!r}", status=404)
    return static_response(resolve_file(directory, "", request.match_info["path"]))


# -- wiring ----------------------------------------------------------------------------------------
class ServerHooks:
    """What compat's PromptServer reaches: thread-safe sends to the hub, the running job's ids."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop

    def _call(self, fn: Any, *args: Any) -> None:
        def safely() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("a plugin's websocket message could not be sent")

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(safely)

    def send(self, event: str, data: Any, sid: str | None) -> None:
        self._call(self.state.hub.send_text, dumps({"type": event, "data": data}), sid)

    def send_binary(self, frame: bytes, sid: str | None) -> None:
        self._call(self.state.hub.send_preview, frame, sid)

    def client_id(self) -> str | None:
        current = self.state.worker.current
        return current.state.client_id if current is not None else None

    def prompt_id(self) -> str | None:
        current = self.state.worker.current
        return current.job.prompt_id if current is not None else None


def add_pack_routes(app: web.Application) -> None:
    """Routes packs declared (PromptServer.instance.routes), under their path and under /api."""
    manager = app[STATE].plugins
    if manager is None:
        return
    for table in manager.route_tables:
        for route in list(table):
            copies = [route]
            path = getattr(route, "path", None)
            if isinstance(route, web.RouteDef) and path and not path.startswith("/api/"):
                copies.append(web.RouteDef(route.method, "/api" + path, route.handler, route.kwargs))
            for item in copies:
                try:
                    item.register(app.router)
                except (RuntimeError, ValueError, TypeError) as exc:
                    log.warning("a plugin route %s could not be added: %s", getattr(item, "path", item), exc)


def attach(app: web.Application) -> None:
    """Connect the plugin manager to this app's hub and worker while the app runs."""
    state = app[STATE]
    manager = state.plugins
    if manager is None:
        return

    async def on_startup(app: web.Application) -> None:
        manager.server = ServerHooks(state, asyncio.get_running_loop())

    async def on_cleanup(app: web.Application) -> None:
        if isinstance(manager.server, ServerHooks) and manager.server.state is state:
            manager.server = None

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)


def reloading(handler: Any, app: web.Application) -> Any:
    """With --reload-plugins: reload changed packs before the wrapped handler (between prompts)."""
    manager = app[STATE].plugins
    if manager is None or not manager.auto_reload:
        return handler

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        await asyncio.to_thread(manager.reload_changed)
        return await handler(request)

    return wrapped
