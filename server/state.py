"""What every handler reaches through `request.app[STATE]`: the pieces create_app wired together."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from graph import Executor, NodeRegistry

from .jobs import JobStore
from .options import ServerOptions
from .worker import Worker
from .ws import Hub


class PluginReport(Protocol):
    """What the server needs of the plugin manager main.py built (plugins.manager.PluginManager)."""

    reports: Mapping[str, Any]  # pack name -> its report
    web_dirs: Mapping[str, Path]  # pack name -> its WEB_DIRECTORY (live: reloading changes it)
    route_tables: list[Any]  # aiohttp RouteTableDefs packs filled (PromptServer.routes)
    auto_reload: bool
    server: Any  # set to the server's hooks while the app runs (compat's PromptServer uses them)

    def to_json(self) -> dict[str, Any]: ...

    def reload_changed(self) -> list[str]: ...


@dataclass(kw_only=True)
class ServerState:
    settings: Any  # main.Settings, duck-typed: folders, listen, port, limits
    registry: NodeRegistry
    executor: Executor
    options: ServerOptions
    store: JobStore
    hub: Hub
    worker: Worker
    web_root: Path | None = None
    web_dirs: Mapping[str, Path] = field(default_factory=dict)  # extra web folders served at /extensions/<name>/
    plugins: PluginReport | None = None  # None when plugins are not loaded
    system_info: Callable[[], Mapping[str, Any]] | None = None

    @property
    def folders(self) -> Any:
        return self.settings.folders


STATE = web.AppKey("sumie_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
