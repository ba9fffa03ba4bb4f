"""A real server over tmp folders, on its own event loop in a background thread, for fuzzers that
drive it with many requests (hypothesis examples, schemathesis calls) from synchronous tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from graph import Executor, Folders, NodeRegistry, RecentRunsCache
from server.app import create_app
from server.options import ServerOptions
from tests.server.conftest import Settings
from tests.support import testpack


@dataclass(kw_only=True)
class Live:
    url: str
    folders: Folders
    session: requests.Session

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kw)


@contextmanager
def live_server(root: Path, **options: Any) -> Iterator[Live]:
    """Serve until the block ends; job runs are bounded so no generated workflow holds the worker."""
    folders = Folders.under(root)
    for name in ("input", "output", "temp", "user", "models"):
        getattr(folders, name).mkdir(parents=True, exist_ok=True)
    registry = NodeRegistry()
    registry.register_module(testpack)
    executor = Executor(registry, cache=RecentRunsCache(1), folders=folders, services={})
    opts = ServerOptions(**{"job_timeout": 5.0, "run_timeout": 2.0, "shutdown_grace": 1.0, **options})
    app = create_app(Settings(folders=folders), registry, executor, options=opts, web_root=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="fuzz-server", daemon=True)
    thread.start()
    assert started.wait(30), "the fuzz server did not start"
    session = requests.Session()
    try:
        yield Live(url=f"http://127.0.0.1:{port}", folders=folders, session=session)
    finally:
        session.close()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
