"""The server log for the editor's log panel, and the other /internal routes ComfyUI's editor reads.

Recent log lines are kept in memory (a bounded buffer); a client that subscribes over
`PATCH /internal/logs/subscribe` gets new lines as `logs` websocket messages while it stays subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from .api_settings import user_folder_root
from .api_system import model_kinds
from .files import PathError, list_files
from .security import read_json, require_object
from .state import state_of
from .users import USER_KEY
from .ws import Hub

MAX_ENTRIES = 1000
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


class LogBuffer(logging.Handler):
    """Keeps the last log lines and forwards new ones to subscribed websocket clients."""

    def __init__(self, hub: Hub, capacity: int = MAX_ENTRIES) -> None:
        super().__init__(level=logging.INFO)
        self.hub = hub
        self.entries: deque[dict[str, str]] = deque(maxlen=capacity)
        self.subscribers: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False) or record.name.startswith("sumie.ws"):
            return  # a log line about sending a log line must not loop
        self._local.busy = True
        try:
            entry = {"t": datetime.fromtimestamp(record.created, UTC).isoformat(), "m": self.format(record) + "\n"}
            self.entries.append(entry)
            if self.subscribers and self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._send, entry)
        except Exception:  # a broken log handler must never break the code that logs
            self.handleError(record)
        finally:
            self._local.busy = False

    def _send(self, entry: dict[str, str]) -> None:
        data = {"entries": [entry], "size": terminal_size()}
        for sid in list(self.subscribers):
            if sid in self.hub.clients:
                self.hub.send("logs", data, sid)
            else:
                self.subscribers.discard(sid)


LOGS = web.AppKey("sumie_logs", LogBuffer)


def terminal_size() -> dict[str, int]:
    size = shutil.get_terminal_size((80, 24))
    return {"cols": size.columns, "rows": size.lines}


def attach(app: web.Application, hub: Hub) -> None:
    """Collect the process's log lines while the app runs."""
    buffer = LogBuffer(hub)
    buffer.setFormatter(FORMAT)
    app[LOGS] = buffer

    async def start(app: web.Application) -> None:
        buffer.loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(buffer)

    async def stop(app: web.Application) -> None:
        logging.getLogger().removeHandler(buffer)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def _entries(request: web.Request) -> list[dict[str, str]]:
    """The server log is the operator's: a user signed in with a --user-token sees none of it (it names
    other users' jobs)."""
    return [] if request.get(USER_KEY) is not None else list(request.app[LOGS].entries)


async def get_logs(request: web.Request) -> web.Response:
    return web.json_response("".join(e["m"] for e in _entries(request)))


async def get_raw_logs(request: web.Request) -> web.Response:
    return web.json_response({"entries": _entries(request), "size": terminal_size()})


async def patch_logs_subscribe(request: web.Request) -> web.Response:
    data = require_object(await read_json(request, state_of(request).options.max_json_bytes))
    client_id, enabled = data.get("clientId"), data.get("enabled")
    if not isinstance(client_id, str) or not isinstance(enabled, bool):
        raise PathError("expected {\"clientId\": string, \"enabled\": true|false}")
    subscribers = request.app[LOGS].subscribers
    if enabled and request.get(USER_KEY) is None:
        subscribers.add(client_id)
    else:
        subscribers.discard(client_id)
    return web.Response(status=200)


async def get_folder_paths(request: web.Request) -> web.Response:
    """{kind: [folder]} for every model kind, as ComfyUI's folder_paths reports them."""
    state = state_of(request)
    root = Path(state.folders.models)
    return web.json_response({kind: [str(root / kind)] for kind in model_kinds(state)})


async def get_files(request: web.Request) -> web.Response:
    """File names in output/, input/ or temp/ (top level, newest first)."""
    kind = request.match_info["directory_type"]
    if kind not in ("output", "input", "temp"):
        raise PathError(f"unknown folder {kind[:40]!r}; use output, input or temp")
    root = user_folder_root(request, kind)
    entries: list[tuple[float, str]] = []
    for rel in list_files(root, recurse=False):
        try:
            entries.append(((root / rel).stat().st_mtime, rel.as_posix()))
        except OSError:
            continue
    return web.json_response([name for _, name in sorted(entries, key=lambda e: e[0], reverse=True)])

