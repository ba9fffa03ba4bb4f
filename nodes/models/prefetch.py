"""Prefetching: loading the next queued job's model files while the current job samples.

A prefetch is the job's own load call (same manager method, same arguments, so the same cache key and
the very object the job will use), run on a background thread with three differences: its weights
go to the offload device (it never takes device memory, so it never evicts what the running job uses),
it is skipped when the predicted size does not fit the free RAM, and it never raises: a file that
fails here fails again, with the usual error naming the node, when the job itself loads it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graph.sizing import system_memory
from nodes.base.errors import ModelLoadError

from .weights_file import SAFETENSORS_DTYPES, SAFETENSORS_SUFFIXES, safetensors_header

log = logging.getLogger("sumie.models.prefetch")

# Left free for the running job (activations, decoded images) beyond what a prefetch predicts it needs.
RESERVE_BYTES = 2 * 1024**3
RESERVE_FRACTION = 0.1

_local = threading.local()


@dataclass(frozen=True, kw_only=True)
class LoadRecord:
    """One file load the manager did (cache hits are not loads): what, when, and whether ahead of time."""

    op: str
    paths: tuple[str, ...]
    started: float  # time.monotonic()
    finished: float
    prefetch: bool


def prefetching() -> bool:
    """Whether this thread is running a prefetch (the manager then loads to the offload device)."""
    return getattr(_local, "active", False)


def record_load(op: str, paths: tuple[str, ...], started: float) -> LoadRecord:
    """The record of a load that just finished on this thread (noting it for the prefetch that ran it)."""
    active = prefetching()
    if active:
        _local.loaded = True
    return LoadRecord(op=op, paths=paths, started=started, finished=time.monotonic(), prefetch=active)


def _tensor_bytes(path: Path, float_itemsize: int) -> int | None:
    """Bytes a safetensors file's tensors take once float tensors are in the load dtype; None if unreadable."""
    try:
        header, _ = safetensors_header(path)
    except (OSError, ModelLoadError):
        return None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        size = max(dtype.itemsize, float_itemsize) if dtype.is_floating_point else dtype.itemsize
        total += math.prod(entry["shape"]) * size
    return total


def predicted_bytes(paths: Sequence[Path], float_itemsize: int) -> int:
    """RAM a load of these files will hold: exact from a safetensors header; for other files (pickles,
    diffusers folders) their size, doubled when floats may widen (a half-precision file loaded as fp32)."""
    total = 0
    for path in paths:
        files = [Path(root) / name for root, _, names in os.walk(path) for name in names] if path.is_dir() else [path]
        for file in files:
            exact = _tensor_bytes(file, float_itemsize) if file.suffix in SAFETENSORS_SUFFIXES else None
            if exact is None:
                exact = file.stat().st_size * (2 if float_itemsize > 2 else 1)
            total += exact
    return total


def memory_verdict(needed: int) -> str | None:
    """Why `needed` more bytes do not fit in RAM now (None when they fit with the reserve left over)."""
    total, available = system_memory()
    if total is None or available is None:
        return "the free RAM cannot be read on this platform"
    reserve = max(RESERVE_BYTES, int(total * RESERVE_FRACTION))
    if needed + reserve > available:
        return (f"needs {needed / 2**20:.0f} MiB and only {available / 2**20:.0f} MiB of RAM is free "
                f"({reserve / 2**20:.0f} MiB is kept for the running job)")
    return None


def run_prefetch(manager: Any, paths: Sequence[Path], load: Callable[[], Any]) -> str:
    """The body of ModelManager.prefetch (see there)."""
    try:
        itemsize = max(torch.empty((), dtype=manager.dtype).element_size(),
                       torch.empty((), dtype=manager.vae_dtype).element_size())
        why = memory_verdict(predicted_bytes(paths, itemsize))
    except OSError as exc:
        return f"skipped: {exc}"
    if why is not None:
        log.info("not prefetching %s: %s", ", ".join(p.name for p in paths), why)
        return f"skipped: {why}"
    _local.active, _local.loaded = True, False
    try:
        load()
    except Exception as exc:  # the job's own load reports it, naming the node
        log.info("prefetching %s failed (the job will report it when it loads the file): %s",
                 ", ".join(p.name for p in paths), exc)
        return f"failed: {exc}"
    finally:
        _local.active = False
    return "loaded" if _local.loaded else "cached"


__all__ = ["LoadRecord", "memory_verdict", "predicted_bytes", "prefetching", "record_load", "run_prefetch"]
