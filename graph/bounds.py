"""Bounds on every accepted JSON value, checked once at ingest.

Whatever is accepted is stored and later served back to every client, so a value that cannot be
served must be refused before it is stored: nesting deep enough to overflow the JSON encoder's
recursion (every later read of the history would fail), non-finite floats (`1e309` parses as
infinity and would go out as a bare `Infinity`) and integers too large for a client to hold.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 100  # editor workflows nest about a dozen levels; the JSON encoders recurse per level
MAX_INT = 2**64  # seeds use the full unsigned 64-bit range; larger is no sensible value anywhere


def find_unservable(data: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Describe the first value that must not be stored (too deep, non-finite, a huge integer), or None.

    Iterative, so it works on values already too deep for recursive code.
    """
    stack: list[tuple[Any, str, int]] = [(data, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{_short(path)} is not a finite number (the largest is about 1.8e308)"
        elif isinstance(value, int):
            if not -MAX_INT <= value <= MAX_INT:
                return f"{_short(path)} is an integer beyond ±2^64"
        elif isinstance(value, (dict, list)):
            if depth >= max_depth:
                return f"{_short(path)} is nested more than {max_depth} levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]", depth + 1)
                         for k, v in items)
    return None


def _short(path: str, limit: int = 120) -> str:
    return path if len(path) <= limit else path[:limit] + "…"


def check_produced(outputs: tuple[list[Any], ...], ui: dict[str, Any] | None, *, max_string_length: int,
                   max_ui_chars: int) -> None:
    """Refuse produced values that would be stored or sent but break the limits typed-in values obey.

    Chained text nodes can multiply a short prompt into megabytes; the result would be stored in
    the history and sent to every client. Raises ValueError (the node fails, naming itself).
    """
    for index, values in enumerate(outputs):
        for value in values:
            if isinstance(value, str) and len(value) > max_string_length:
                raise ValueError(f"output {index} is a text of {len(value):,} characters, over the limit of "
                                 f"{max_string_length:,} (the same limit as for text typed into an input)")
    if ui is None:
        return
    try:
        size = len(json.dumps(ui, default=repr, ensure_ascii=False))
    except RecursionError:
        raise ValueError("its UI output is nested too deeply to be stored") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"its UI output cannot be stored as JSON: {exc}") from None
    if size > max_ui_chars:
        raise ValueError(f"its UI output is {size:,} characters of JSON, over the limit of {max_ui_chars:,} "
                         "(it would be stored in the history and sent to every client)")
