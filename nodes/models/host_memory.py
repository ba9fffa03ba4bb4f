"""Giving freed host memory back to the system between steps of a run.

glibc's malloc keeps memory freed by one step (the sampler's activations) in its arenas for reuse;
memory a later step then allocates in other sizes (the VAE decode's larger tensors) comes on top.
`trim_heap` returns the free parts of every arena to the system (``malloc_trim(0)``), so each step
starts from what is really in use. Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl has none
    except OSError:
        return None


def trim_heap() -> bool:
    """Return malloc's free memory to the system; True when something was returned."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


__all__ = ["trim_heap"]
