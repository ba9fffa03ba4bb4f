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
from pathlib import Path

from aiohttp import web

from graph.errors import Issue, RequestError

from .files import write_atomic
from .options import ServerOptions

DEFAULT_USER = "default"
USERS_FILE = "users.json"
USER_HEADER = "comfy-user"
USER_KEY = "sumie_user"  # request key set by the token middleware
# Folders ComfyUI's editor lists at start; they exist from the start, so listing them never answers 404.
STANDARD_FOLDERS = ("workflows", "subgraphs")
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
        """The user's own folder, with its standard sub-folders."""
        if user != DEFAULT_USER and _ID_UNSAFE.sub("", user) != user:
            raise UnknownUser(user)
        path = self.root / user
        for name in STANDARD_FOLDERS:
            (path / name).mkdir(parents=True, exist_ok=True)
        return path


USERS = web.AppKey("sumie_users", Users)
