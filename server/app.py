"""The aiohttp app factory and `serve`, the entry point main.py's `serve` command calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from graph import Executor, NodeRegistry
from graph.stale import remove_partial_writes

from . import frontend_routes
from .jobs import JobStore
from .options import ServerOptions
from .routes import add_routes
from .security import Guard, is_loopback
from .state import STATE, PluginReport, ServerState
from .users import token_middlewares
from .worker import Worker
from .ws import Hub

log = logging.getLogger("sumie.server")

DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
JOB_DB_NAME = "jobs.sqlite3"
EXIT_OK, EXIT_REFUSED, EXIT_BIND = 0, 2, 1


def create_app(settings: Any, registry: NodeRegistry, executor: Executor, *, options: ServerOptions | None = None,
               system_info: Callable[[], Mapping[str, Any]] | None = None, web_root: Path | None = DEFAULT_WEB_ROOT,
               web_dirs: Mapping[str, Path] | None = None,
               plugins: PluginReport | None = None,
               make_worker: Callable[..., Worker] | None = None) -> web.Application:
    """Wire the store, hub and worker; the worker starts (after crash recovery) when the app starts.

    `plugins` is the plugin manager main.py loaded the packs with (GET /plugins, their web folders and
    routes, reloading); `web_dirs` adds web folders of its own (name -> folder, served at /extensions/).
    `make_worker` replaces the in-process worker (called with store, executor, hub and options): main.py
    passes server.cluster's, which runs jobs on worker actors.
    """
    options = options or ServerOptions()
    if options.web_root is not None:
        web_root = options.web_root
    guard = Guard(options, listen=getattr(settings, "listen", "127.0.0.1"))
    app = web.Application(middlewares=token_middlewares(guard.middlewares(), guard, options),
                          client_max_size=max(options.max_json_bytes, options.max_upload_bytes) + 1024 * 1024)
    store = JobStore(Path(settings.folders.user) / JOB_DB_NAME)
    hub = Hub(capacity=options.ws_buffer, max_bytes=options.ws_buffer_bytes, queue_remaining=store.queue_remaining)
    worker = (make_worker or Worker)(store=store, executor=executor, hub=hub, options=options)
    app[STATE] = ServerState(settings=settings, registry=registry, executor=executor, options=options, store=store,
                             hub=hub, worker=worker, web_root=web_root, web_dirs=dict(web_dirs or {}),
                             plugins=plugins, system_info=system_info)
    add_routes(app, hub.handle)
    frontend_routes.setup(app, settings=settings, options=options, hub=hub)
    app.cleanup_ctx.append(_run_worker)
    app.on_response_prepare.append(_nosniff)
    return app


async def _run_worker(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    folders = state.settings.folders
    roots = [p for p in (getattr(folders, n, None) for n in ("input", "output", "temp", "user", "models")) if p]
    await asyncio.to_thread(remove_partial_writes, roots)
    for item in state.store.recover(max_attempts=state.options.max_attempts):
        if item.action == "requeued":
            log.warning("job %s was running when the server stopped; re-queued (attempt %d of %d)",
                        item.prompt_id, item.attempts + 1, state.options.max_attempts)
        else:
            log.error("job %s was running when the server stopped %d time(s); failed as worker_lost",
                      item.prompt_id, item.attempts)
    state.worker.start()
    yield
    await state.hub.close_all()
    await state.worker.stop()
    state.store.close()


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def refuse_reason(listen: str, options: ServerOptions) -> str | None:
    """Why the server must not start with these settings, if it must not."""
    if not is_loopback(listen) and not options.auth_token and not options.user_tokens and not options.allow_remote:
        return (f"refusing to listen on {listen} without --auth-token: anyone who reaches the port could run jobs "
                "and read your files. Set --auth-token (or SUMIE_AUTH_TOKEN), or pass --allow-remote to accept that")
    return None


def serve(settings: Any, registry: NodeRegistry, executor: Executor, options: ServerOptions | None = None, *,
          plugins: PluginReport | None = None, make_worker: Callable[..., Worker] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; the exit code for main.py."""
    options = options or ServerOptions()
    listen = getattr(settings, "listen", "127.0.0.1")
    port = int(getattr(settings, "port", 8188))
    reason = refuse_reason(listen, options)
    if reason is not None:
        log.error("%s", reason)
        return EXIT_REFUSED
    for name in ("input", "output", "temp", "user", "models"):
        Path(getattr(settings.folders, name)).mkdir(parents=True, exist_ok=True)
    try:
        app = create_app(settings, registry, executor, options=options, plugins=plugins, make_worker=make_worker)
    except RuntimeError as exc:  # --workers asks for Ray and it is not installed
        log.error("%s", exc)
        return EXIT_REFUSED
    host = listen.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    log.info("Sumie listening on http://%s:%d (%d node types)", shown, port, len(registry))
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", shown, port, exc.strerror or exc)
        return EXIT_BIND
    return EXIT_OK
