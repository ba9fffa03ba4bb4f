"""What every handler reaches through `request.app[STATE]`: the pieces create_app wired together."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from graph import Executor, NodeRegistry

from .jobs import JobStore
from .options import ServerOptions
from .worker import Worker
from .ws import Hub


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
    web_dirs: Mapping[str, Path] = field(default_factory=dict)  # plugin pack -> its WEB_DIRECTORY
    system_info: Callable[[], Mapping[str, Any]] | None = None

    @property
    def folders(self) -> Any:
        return self.settings.folders


STATE = web.AppKey("sumie_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
