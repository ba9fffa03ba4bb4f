"""Users: who a request acts for, and that user's folder under the user directory.

Single-user (the default) everything belongs to the user `default`, as in ComfyUI. With --multi-user
each user has their own folder (settings, saved workflows) and sees only their own jobs and outputs.
A user is chosen by a token (`--user-token NAME=TOKEN`: the token *is* the sign-in, so no one can act
as another user) or, without tokens, by ComfyUI's `comfy-user` header, which trusts the client and
suits a shared machine among friends, not the open internet.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.errors import Issue, RequestError
from graph.ui_workflow import is_ui_workflow

from .files import write_atomic
from .options import ServerOptions
from .security import error_response

DEFAULT_USER = "default"
USERS_FILE = "users.json"
USER_HEADER = "comfy-user"
USER_KEY = web.RequestKey("sumie_user", str)  # the user a token signed the request in as
# Folders ComfyUI's editor lists at start; they exist from the start, so listing them never answers 404.
STANDARD_FOLDERS = ("workflows", "subgraphs")
BOOKMARKS = "workflows/.index.json"  # ComfyUI's editor keeps the user's workflow bookmarks here
PER_USER_KINDS = ("output", "temp")  # with --multi-user and user tokens these hold one folder per user
_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_]+")


def parse_user_tokens(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`NAME=TOKEN` items as (token, name) pairs; a name or token used twice is an error."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, token = item.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not _NAME.fullmatch(name) or len(token) < 8:
            raise ValueError(f"--user-token {item.split('=')[0]!r}=...: expected NAME=TOKEN with a name of letters, "
                             "digits, _ - and a token of at least 8 characters")
        if any(t == token for t, _ in pairs) or any(n == name for _, n in pairs):
            raise ValueError(f"--user-token: the user {name!r} or its token is given twice")
        pairs.append((token, name))
    return tuple(pairs)


class UnknownUser(RequestError):
    def __init__(self, user: str) -> None:
        super().__init__(Issue(type="unknown_user", message=f"Unknown user {user[:64]!r}",
                               details="create it with POST /users, or sign in with your token"), status=403)


class Users:
    """The users of a --multi-user server (id -> name, kept in user/users.json, as ComfyUI does)."""

    def __init__(self, root: Path, options: ServerOptions) -> None:
        self.root = root
        self.multi_user = options.multi_user
        self.tokens = {token.encode(): name for token, name in options.user_tokens}
        self._lock = threading.Lock()
        self._users: dict[str, str] = self._load() if self.multi_user else {}
        for name in self.tokens.values():  # a token user's id is its name, so its folder is stable
            self._users.setdefault(name, name)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / USERS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items() if _ID_UNSAFE.sub("", str(k)) == str(k)} \
            if isinstance(data, dict) else {}

    @property
    def users(self) -> dict[str, str]:
        with self._lock:
            return dict(self._users)

    def add(self, name: str) -> str:
        """Create a user named `name`; its new id (a folder name), or ValueError if the name is taken."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("a user name is 1 to 64 characters")
        with self._lock:
            if name in self._users.values():
                raise ValueError("Duplicate username.")
            user_id = f"{_ID_UNSAFE.sub('-', name)}_{uuid.uuid4()}"
            self._users[user_id] = name
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.root, USERS_FILE, json.dumps(self._users, indent=2).encode(), overwrite=True)
        return user_id

    def token_user(self, supplied: str) -> str | None:
        """The user a token signs in as (constant-time against every user token), or None."""
        found = None
        for token, name in self.tokens.items():
            if hmac.compare_digest(supplied.encode(), token):
                found = name
        return found

    def user_of(self, request: web.Request) -> str:
        """The user a request acts for; 403 for an unknown `comfy-user`."""
        if not self.multi_user:
            return DEFAULT_USER
        bound = request.get(USER_KEY)
        if bound is not None:
            return bound
        wanted = request.headers.get(USER_HEADER, "")
        if not wanted:
            return DEFAULT_USER
        with self._lock:
            if wanted not in self._users:
                raise UnknownUser(wanted)
        return wanted

    def folder(self, user: str) -> Path:
        """The user's own folder, with its standard sub-folders and files."""
        if user != DEFAULT_USER and _ID_UNSAFE.sub("", user) != user:
            raise UnknownUser(user)
        path = self.root / user
        for name in STANDARD_FOLDERS:
            (path / name).mkdir(parents=True, exist_ok=True)
        if not (path / BOOKMARKS).exists():  # none yet: an empty list, so reading it is never a 404
            write_atomic(path / "workflows", ".index.json", b'{"favorites": []}', overwrite=True)
        return path


USERS = web.AppKey("sumie_users", Users)
OWNER_KEY = "sumie_user"  # in a job's extra_data: the user it belongs to (--multi-user)
TOKEN_COOKIE = "sumie_token"


def owner_of(job: Any) -> str:
    """The user a job belongs to (jobs queued before --multi-user was turned on belong to `default`)."""
    owner = job.extra_data.get(OWNER_KEY) if isinstance(job.extra_data, dict) else None
    return owner if isinstance(owner, str) else DEFAULT_USER


def _supplied_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE, "")


def token_middlewares(middlewares: list[Any], guard: Any, options: ServerOptions) -> list[Any]:
    """With user tokens, the guard's token check becomes one that also signs users in: a user token
    binds the request to its user; the --auth-token (if any) still passes, acting as `comfy-user` says."""
    if not options.user_tokens:
        return middlewares

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        supplied = _supplied_token(request)
        user = request.app[USERS].token_user(supplied) if supplied else None
        if user is not None:
            request[USER_KEY] = user
        elif not (supplied and guard.token is not None and hmac.compare_digest(supplied.encode(), guard.token)):
            return error_response(401, "unauthorized", "A valid token is required",
                                  details="send 'Authorization: Bearer TOKEN' (or open the editor once with "
                                          "?token=TOKEN)", headers={"WWW-Authenticate": 'Bearer realm="sumie"'})
        response = await handler(request)
        if "token" in request.query and request.method == "GET" and not response.prepared:
            # A browser opened /?token=...: later requests of the editor (fetch, websocket) carry the cookie.
            response.set_cookie(TOKEN_COOKIE, supplied, httponly=True, samesite="Strict", path="/")
        return response

    return [auth if m == guard.auth else m for m in middlewares]


def stamp_owner(request: web.Request, data: Any, store: Any) -> Any:
    """A POST /prompt body made to belong to the requesting user (--multi-user): its owner is set (never
    taken from the client), its client_id is the user's socket id, and a prompt_id another user already
    used is refused (`store`: the job store). Single-user: the body unchanged."""

    users = request.app[USERS]
    if not users.multi_user or not isinstance(data, dict):
        return data
    if is_ui_workflow(data):
        data = {"prompt": data}
    user = users.user_of(request)
    existing = store.get(data["prompt_id"]) if isinstance(data.get("prompt_id"), str) else None
    if existing is not None and owner_of(existing) != user:
        return error_response(409, "prompt_id_conflict", "This prompt_id is already used",
                              details="use a new prompt_id")
    extra = data.get("extra_data")
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        client_id = uuid.uuid4().hex  # events of a prompt without a client go to no one, not to everyone
    return {**data, "extra_data": {**(extra if isinstance(extra, dict) else {}), OWNER_KEY: user},
            "client_id": scoped_sid(request, client_id)}


def scoped_sid(request: web.Request, sid: str) -> str:
    """With user tokens, a websocket id only that user's sockets can have (the token comes with the socket,
    as a cookie or ?token=), so no one receives another's events. Without tokens, browsers cannot say who
    a socket belongs to; ids stay as the client chose them (random ones, as ComfyUI's editor makes)."""
    user = request.get(USER_KEY)
    if user is None:
        return sid
    prefix = f"{user}:"
    return sid if sid.startswith(prefix) else prefix + sid


class RunScope:
    """Where a job's files go. With --multi-user and user tokens, output/ and temp/ get a folder per user,
    and cached results are dropped when the next job belongs to someone else (a cached output node would
    otherwise hand one user the other's file names). Without tokens a browser's image requests cannot say
    whose they are, so outputs stay shared, as in ComfyUI."""

    def __init__(self, executor: Any, options: ServerOptions) -> None:
        self.executor = executor
        self.per_user = options.multi_user and bool(options.user_tokens)
        self._last_owner: str | None = None

    def folders_for(self, job: Any) -> Any:
        """The folders the job runs with (None: the executor's own); call on the run thread."""
        folders = getattr(self.executor, "folders", None)
        if not self.per_user or folders is None:
            return None
        owner = owner_of(job)
        if self._last_owner is not None and owner != self._last_owner:
            self.executor.cache.clear()
        self._last_owner = owner
        per_user = {kind: Path(getattr(folders, kind)) / owner for kind in PER_USER_KINDS}
        for path in per_user.values():
            path.mkdir(parents=True, exist_ok=True)
        return replace(folders, **per_user)
