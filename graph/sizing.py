"""Footprint estimates for cached values, by duck typing so the engine never imports torch."""

from __future__ import annotations

import sys
from typing import Any

_MAX_ITEMS = 100_000


def estimate_size(value: Any) -> int:
    """Bytes held by a value: array-likes report `nbytes`; containers are walked iteratively.

    An object may define `__sumie_size__()` (a model handle reports 0: the model manager owns its weights).
    """
    total = 0
    stack = [value]
    seen: set[int] = set()
    visited = 0
    while stack and visited < _MAX_ITEMS:
        v = stack.pop()
        visited += 1
        if id(v) in seen:
            continue
        seen.add(id(v))
        hook = getattr(type(v), "__sumie_size__", None)
        if hook is not None:
            total += int(hook(v))
            continue
        nbytes = getattr(v, "nbytes", None)
        if isinstance(nbytes, int):
            total += nbytes
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += sys.getsizeof(v)
            stack.extend(v)
        elif isinstance(v, dict):
            total += sys.getsizeof(v)
            stack.extend(v.values())
        else:
            total += sys.getsizeof(v)
    return total
