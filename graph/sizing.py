"""Memory sizes without torch: footprints of cached values (by duck typing) and the machine's RAM."""

from __future__ import annotations

import os
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


def system_memory() -> tuple[int | None, int | None]:
    """Total and available RAM in bytes (None when the platform cannot tell), without psutil.

    /proc/meminfo's MemAvailable counts reclaimable page cache, which the free-page count does not.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.split()[1:2]}
        return info.get("MemTotal"), info.get("MemAvailable", info.get("MemFree"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, None
