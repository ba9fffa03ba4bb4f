"""Settings and users: what ComfyUI's editor stores on the server, per user.

Settings live in `<user folder>/comfy.settings.json` (the file name ComfyUI uses, so a user folder
copied from ComfyUI keeps its settings). The editor reads them all at start and writes one at a time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.errors import Issue, RequestError

from .files import folder_root, write_atomic
from .security import error_response, read_json, require_object
from .state import state_of
from .users import PER_USER_KINDS, USER_KEY, USERS, Users

SETTINGS_FILE = "comfy.settings.json"
_write_lock = threading.Lock()  # one read-modify-write of a settings file at a time


def users_of(request: web.Request) -> Users:
    return request.app[USERS]


def user_folder(request: web.Request) -> Path:
    """The folder of the user this request acts for (user/default when single-user)."""
    users = users_of(request)
    return users.folder(users.user_of(request))


def user_folder_root(request: web.Request, kind: str) -> Path:
    """The folder of a /view or upload `type`; with --multi-user and user tokens, output/ and temp/ hold a
    folder per user (see users.RunScope)."""
    root = folder_root(state_of(request).folders, kind)
    users = users_of(request)
    if users.multi_user and users.tokens and kind in PER_USER_KINDS:
        root = root / users.user_of(request)
    return root


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RequestError(Issue(type="invalid_settings", message=f"The settings file {path.name} cannot be read",
                                 details=f"{exc}"[:300] + "; fix or delete the file"), status=500) from None
    return data if isinstance(data, dict) else {}


def _update_settings(path: Path, changes: dict[str, Any]) -> None:
    with _write_lock:
        settings = _read_settings(path)
        settings.update(changes)
        text = json.dumps(settings, indent=4, ensure_ascii=False)
        write_atomic(path.parent, path.name, text.encode("utf-8"), overwrite=True)


async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(user_folder(request) / SETTINGS_FILE))


async def get_setting(request: web.Request) -> web.Response:
    settings = _read_settings(user_folder(request) / SETTINGS_FILE)
    return web.json_response(settings.get(request.match_info["id"]))


async def post_settings(request: web.Request) -> web.Response:
    state = state_of(request)
    changes = require_object(await read_json(request, state.options.max_json_bytes), "The settings")
    await asyncio.to_thread(_update_settings, user_folder(request) / SETTINGS_FILE, changes)
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    state = state_of(request)
    value = await read_json(request, state.options.max_json_bytes)
    await asyncio.to_thread(_update_settings, user_folder(request) / SETTINGS_FILE,
                            {request.match_info["id"]: value})
    return web.Response(status=200)


async def get_users(request: web.Request) -> web.Response:
    """Single-user: `{"storage": "server", "migrated": true}` (no user picker). Multi-user: the users,
    unless the request signed in with a user token (then it is that user, and no picker is shown)."""
    users = users_of(request)
    if not users.multi_user or request.get(USER_KEY) is not None:
        return web.json_response({"storage": "server", "migrated": True})
    return web.json_response({"storage": "server", "users": users.users})


async def post_users(request: web.Request) -> web.Response:
    users = users_of(request)
    if not users.multi_user:
        return error_response(400, "single_user", "This server has one user",
                              details="start it with --multi-user to create users")
    if users.tokens:
        return error_response(403, "users_from_tokens", "Users are given by --user-token on this server",
                              details="sign in with your token")
    data = require_object(await read_json(request, state_of(request).options.max_json_bytes))
    name = data.get("username")
    if not isinstance(name, str):
        raise RequestError(Issue(type="invalid_request", message="'username' must be a string"))
    try:
        user_id = await asyncio.to_thread(users.add, name)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(user_id)
