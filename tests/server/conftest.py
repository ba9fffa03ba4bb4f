"""Server test harness: async tests run on a fresh event loop each, against an in-process app.

No pytest plugin is needed: coroutine tests in this folder are run with asyncio.run by the hook below.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from graph import Executor, Folders, NodeRegistry, RecentRunsCache
from server.app import create_app
from server.options import ServerOptions
from tests.server.nodes import make_registry


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True
    return None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Duck-typed like main.Settings: the server reads only these."""

    folders: Folders
    listen: str = "127.0.0.1"
    port: int = 0


@dataclass(kw_only=True)
class Env:
    root: Path
    settings: Settings
    registry: NodeRegistry
    executor: Executor
    calls: Counter
    gate: threading.Event
    services: dict[str, Any] = field(default_factory=dict)
    plugins: Any = None  # a plugins.manager.PluginManager, handed to create_app as main.py does

    @property
    def folders(self) -> Folders:
        return self.settings.folders


@pytest.fixture
def env(tmp_path: Path) -> Env:
    folders = Folders.under(tmp_path)
    for name in ("input", "output", "temp", "user", "models"):
        getattr(folders, name).mkdir(parents=True)
    registry = make_registry()
    calls: Counter = Counter()
    gate = threading.Event()
    services = {"calls": calls, "gate": gate}
    executor = Executor(registry, cache=RecentRunsCache(1), folders=folders, services=services)
    return Env(root=tmp_path, settings=Settings(folders=folders), registry=registry, executor=executor, calls=calls,
               gate=gate, services=services)


@contextlib.asynccontextmanager
async def served(env: Env, **options: Any) -> AsyncIterator[TestClient]:
    app = create_app(env.settings, env.registry, env.executor, options=ServerOptions(**options), web_root=None,
                     plugins=env.plugins)
    async with TestClient(TestServer(app)) as client:
        try:
            yield client
        finally:
            env.gate.set()  # let a run blocked at a gate finish so shutdown is quick


async def receive_json(ws: ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any] | bytes:
    msg = await ws.receive(timeout=timeout)
    if msg.type == WSMsgType.TEXT:
        return msg.json()
    if msg.type == WSMsgType.BINARY:
        return msg.data
    raise AssertionError(f"websocket ended: {msg.type} {msg.data!r}")


async def until_done(ws: ClientWebSocketResponse, prompt_id: str, timeout: float = 15.0) -> list[Any]:
    """Every message up to and including `executing` with node null for this prompt."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"prompt {prompt_id} not done in {timeout}s; got {[_kind(m) for m in seen]}")
        msg = await receive_json(ws, left)
        seen.append(msg)
        if isinstance(msg, dict) and msg["type"] == "executing" and msg["data"]["node"] is None \
                and msg["data"].get("prompt_id") == prompt_id:
            return seen


async def wait_for(predicate, *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _kind(msg: Any) -> str:
    return msg["type"] if isinstance(msg, dict) else f"binary[{len(msg)}]"


def kinds(messages: list[Any]) -> list[str]:
    return [_kind(m) for m in messages]
