"""Strict JSON reading for anything a user or client hands us (request bodies, workflow files)."""

from __future__ import annotations

import json
from typing import Any

from .bounds import find_unservable
from .errors import Issue, RequestError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use a finite number)")


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON, rejecting NaN/Infinity, overflowing numbers, deep nesting and lone surrogates (RequestError)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(Issue(type="invalid_json", message="The body is not UTF-8 text",
                                     details=str(exc))) from None
    if not text.strip():
        raise RequestError(Issue(type="invalid_json", message="The body is empty; expected a JSON object"))
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(Issue(type="invalid_json", message="The JSON is nested too deeply")) from None
    except ValueError as exc:
        raise RequestError(Issue(type="invalid_json", message=f"Invalid JSON: {exc}")) from None
    unservable = find_unservable(data)
    if unservable is not None:
        raise RequestError(Issue(type="invalid_json", message=f"Value refused: {unservable}",
                                 details="such a value could not be stored and served back"))
    bad = find_lone_surrogate(data)
    if bad is not None:
        raise RequestError(Issue(type="invalid_json", message=f"Invalid text at {bad}: a lone surrogate "
                                 "(\\ud800-\\udfff) cannot be stored or encoded"))
    return data


def find_lone_surrogate(data: Any) -> str | None:
    """The JSON path of the first string (key or value) that cannot be encoded as UTF-8, if any."""
    stack: list[tuple[Any, str]] = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return path
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and not _encodable(k):
                    return f"{path} (a key)"
                stack.append((v, f"{path}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
