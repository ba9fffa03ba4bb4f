"""Request guards: token auth, Origin/Host checks against drive-by requests, body size limits, errors.

A web page the user visits can make their browser send requests to 127.0.0.1:8188. A cross-site
request carries an `Origin` naming the page, so anything whose Origin is not the server itself (or
explicitly allowed) is refused; a DNS-rebinding page is caught by requiring a loopback `Host` when
the server listens on loopback without a token.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from graph.errors import Issue, RequestError
from graph.jsonio import loads_strict

from .files import PathError
from .images import ImageError
from .options import ServerOptions

log = logging.getLogger("sumie.security")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
# Only here is `?token=` accepted: elsewhere a token in the URL ends up in logs, history and Referer.
WEBSOCKET_PATHS = frozenset({"/ws", "/api/ws"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_response(status: int, type_: str, message: str, *, details: str = "",
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"type": type_, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}
    return web.json_response(body, status=status, headers=headers)


_AUTHORITY_FORBIDDEN = frozenset("/?#@\\ \t\r\n")


def split_authority(value: str) -> tuple[str, str] | None:
    """(hostname, port) of a Host header value, or None when it is malformed.

    urlsplit raises ValueError on `[::1` and `.port` on `:abc` or `:99999`; a header is client input,
    so those shapes are answered as bad requests instead of reaching the error handler as a bug.
    """
    if not value or len(value) > 512 or any(c in _AUTHORITY_FORBIDDEN for c in value):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), str(port or "")


def split_origin(value: str) -> tuple[str, str, str] | None:
    """(scheme, hostname, port) of an Origin header value (port defaulted by scheme), or None when malformed."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    found = split_authority(parts.netloc)
    if found is None:
        return None
    host, port = found
    return parts.scheme, host, port or ("443" if parts.scheme == "https" else "80")


# File-system errors a client's path can cause: a clear 4xx instead of a 500.
_OS_ERRORS: dict[int, tuple[int, str, str]] = {
    errno.ENAMETOOLONG: (400, "invalid_path", "a file or folder name is longer than the file system allows "
                                              "(usually 255 bytes per name)"),
    errno.ENOTDIR: (409, "path_conflict", "a part of the path is a file, not a folder"),
    errno.EISDIR: (409, "path_conflict", "the path names a folder, not a file"),
    errno.EEXIST: (409, "path_conflict", "a file is in the way of a folder the path needs"),
    errno.ENOTEMPTY: (409, "path_conflict", "the target is a folder that is not empty"),
    errno.ELOOP: (400, "invalid_path", "the path goes through too many symbolic links"),
    errno.ENOENT: (404, "not_found", "no such file or folder"),
    errno.EACCES: (403, "forbidden", "the server may not access that file"),
    errno.EPERM: (403, "forbidden", "the server may not access that file"),
    errno.ENOSPC: (507, "disk_full", "the disk is full; nothing was written"),
    errno.EROFS: (403, "forbidden", "that folder is read-only"),
}


def os_error_answer(exc: OSError) -> tuple[int, str, str] | None:
    """(status, type, message) for a file-system error caused by the path a client sent, else None."""
    found = _OS_ERRORS.get(exc.errno or -1)
    if found is None:
        return None
    status, type_, message = found
    name = os.path.basename(str(exc.filename or ""))
    if name and status != 400:
        message = f"{message}: {name[:80]!r}"
    return status, type_, message


class Guard:
    """The middlewares, configured once from the options and the address the server listens on."""

    def __init__(self, options: ServerOptions, *, listen: str) -> None:
        self.options = options
        self.token = options.auth_token.encode() if options.auth_token else None
        self.check_host = self.token is None and is_loopback(listen)
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in options.allowed_origins)

    def middlewares(self) -> list:
        return [self.errors, self.origin, self.auth, self.body_limit]

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn every rejected input into a 4xx with the usual error shape; anything else is a logged 500."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except RequestError as exc:
            return web.json_response({"error": exc.issue.to_json(), "node_errors": {}}, status=exc.status)
        except TooLarge as exc:
            return too_large(exc.limit)
        except PathError as exc:
            return error_response(exc.status, "invalid_path" if exc.status != 404 else "not_found", exc.message)
        except ImageError as exc:
            return error_response(exc.status, "invalid_image", exc.message)
        except (HttpProcessingError, RequestPayloadError) as exc:  # corrupt gzip, broken chunking
            return error_response(400, "malformed_body", "The request body could not be read",
                                  details=str(getattr(exc, "message", "") or exc)[:200])
        except OSError as exc:
            answer = os_error_answer(exc)
            if answer is None:
                raise
            return error_response(answer[0], answer[1], answer[2])
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "the server failed on this request (a bug: see its log)")

    @web.middleware
    async def origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host_header = request.headers.get("Host", "")
        host = split_authority(host_header) if host_header else ("", "")
        if host is None:
            return error_response(400, "bad_host", f"Malformed Host header {host_header[:100]!r}",
                                  details="expected host or host:port with a port from 0 to 65535")
        if self.check_host:
            hostname = host[0]
            if hostname and not is_loopback(hostname):
                return error_response(403, "forbidden_host", f"Host {host_header[:100]!r} is not this server",
                                      details="the server listens on loopback; use http://127.0.0.1 or "
                                      "http://localhost (this blocks DNS-rebinding pages)")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_ok(origin, host):
            return error_response(403, "forbidden_origin", f"Cross-site request from {origin[:100]!r} refused",
                                  details="start the server with --allow-origin ORIGIN to allow a web page to "
                                  "use this API")
        if origin is None and request.headers.get("Sec-Fetch-Site") == "cross-site" and \
                request.method not in ("GET", "HEAD", "OPTIONS"):
            return error_response(403, "forbidden_origin", "Cross-site request refused")
        return await handler(request)

    def _origin_ok(self, origin: str, host: tuple[str, str]) -> bool:
        if origin.rstrip("/").lower() in self.allowed_origins:
            return True
        parsed = split_origin(origin)
        if parsed is None:
            return False  # "null" (sandboxed frames, file://), odd schemes, malformed values
        scheme, o_host, o_port = parsed
        h_host, h_port = host
        if not h_port:
            h_port = "443" if scheme == "https" else "80"
        if (o_host, o_port) == (h_host, h_port):
            return True
        # localhost and 127.0.0.1 name the same loopback server.
        return o_port == h_port and is_loopback(o_host) and is_loopback(h_host)

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None:
            return await handler(request)
        supplied = ""
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            supplied = header[7:].strip()
        elif "token" in request.query and request.path in WEBSOCKET_PATHS:
            supplied = request.query["token"]  # browsers cannot set headers on a websocket
        elif "sumie_token" in request.cookies:
            supplied = request.cookies["sumie_token"]
        if not supplied or not hmac.compare_digest(supplied.encode(), self.token):
            return error_response(401, "unauthorized", "A valid token is required",
                                  details="send 'Authorization: Bearer TOKEN' (?token=TOKEN only on the websocket)",
                                  headers={"WWW-Authenticate": 'Bearer realm="sumie"'})
        return await handler(request)

    @web.middleware
    async def body_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """413 from the declared length, before a byte of the body is read or parsed."""
        limit = self.limit_for(request)
        length = request.content_length
        if length is not None and length > limit:
            return too_large(limit)
        return await handler(request)

    def limit_for(self, request: web.Request) -> int:
        path = request.path
        if path.startswith("/api/"):
            path = path[4:]
        if path.startswith("/upload/"):
            return self.options.max_upload_bytes + 64 * 1024  # room for the multipart framing
        return self.options.max_json_bytes


def too_large(limit: int) -> web.Response:
    return error_response(413, "payload_too_large", f"The request body is larger than {limit} bytes",
                          details="raise --max-body-mb / --max-upload-mb to accept larger requests")


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, stopping at `limit` bytes (chunked bodies declare no length up front)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int, *, allow_empty: bool = False) -> object:
    """Strict JSON (no NaN, no lone surrogates, bounded nesting) or RequestError / TooLarge."""
    body = await read_body(request, limit)
    if allow_empty and not body.strip():
        return {}
    return loads_strict(body)


def require_object(data: object, what: str = "The request body") -> dict:
    if not isinstance(data, dict):
        raise RequestError(Issue(type="invalid_request", message=f"{what} must be a JSON object",
                                 details=f"got {type(data).__name__}"))
    return data
