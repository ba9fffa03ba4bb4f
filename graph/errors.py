"""Structured problems that reach the user the same way over HTTP, websocket, CLI and editor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

_RECEIVED_PREVIEW = 200


def shown(name: str, limit: int = 80) -> str:
    """A bounded quoted preview of a client-supplied name for messages (a 1 MB name is not echoed back)."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}… ({len(name):,} characters)"


def preview_value(value: Any, limit: int = _RECEIVED_PREVIEW) -> Any:
    """A JSON-safe, size-capped rendering of a received value for error messages."""
    if value is None or isinstance(value, (bool, int)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**64:
            return f"{str(value)[:40]}... ({value.bit_length()} bits)"
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, str):
        safe = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return safe if len(safe) <= limit else f"{safe[:limit]}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


@dataclass(frozen=True, kw_only=True, slots=True)
class Issue:
    """One problem, in the error shape ComfyUI clients parse (`type`, `message`, `details`, `extra_info`)."""

    type: str
    message: str
    details: str = ""
    input_name: str | None = None
    received: Any = MISSING
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        extra = dict(self.extra)
        if self.input_name is not None:
            extra["input_name"] = self.input_name
        if self.received is not MISSING:
            extra["received_value"] = preview_value(self.received)
        return {"type": self.type, "message": self.message, "details": self.details, "extra_info": extra}

    def describe(self, node_id: str | None = None, class_type: str | None = None) -> str:
        """A one-line human rendering, for logs and the command line."""
        where = ""
        if node_id is not None:
            where = f"node {node_id}" + (f" ({class_type})" if class_type else "")
            if self.input_name:
                where += f", input '{self.input_name}'"
            where += ": "
        tail = f" [{self.details}]" if self.details and self.details != self.input_name else ""
        return f"{where}{self.message}{tail}"


class InputError(Exception):
    """Raised by an input spec when a constant does not fit; turned into an `Issue` by validation."""

    def __init__(self, type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.extra = extra


class SchemaError(ValueError):
    """A node class whose declared schema is inconsistent; raised when it is registered."""


class RequestError(ValueError):
    """A request (envelope or JSON document) that cannot be accepted at all."""

    def __init__(self, issue: Issue, status: int = 400) -> None:
        super().__init__(issue.message)
        self.issue = issue
        self.status = status


class Interrupted(Exception):
    """Raised inside a run when its interrupt token is set (by a user or a time limit)."""

    def __init__(self, reason: str = "interrupted") -> None:
        super().__init__(reason)
        self.reason = reason
