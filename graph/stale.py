"""Removing what a killed process left half-written.

Every file is written to a hidden temporary beside its target and renamed into place (see
graph.paths.atomic_write), so a `kill -9` mid-write leaves only such a temporary. They are never
served, but they fill the disk; the server removes them when it starts.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("sumie.stale")

# ".{name}.{hex}.tmp" from atomic_write; the demo checkpoint's ".{name}.{hex}.tmp.safetensors".
PARTIAL_WRITE = re.compile(r"\..+\.[0-9a-f]{12,32}\.tmp(\.safetensors)?")
MIN_AGE_S = 30.0  # younger ones may belong to a live writer (another process sharing the folders)


def remove_partial_writes(roots: Iterable[str | os.PathLike[str]], *, min_age_s: float = MIN_AGE_S) -> list[Path]:
    """Delete leftover temporaries under `roots` (symlinks not followed); the paths removed."""
    removed: list[Path] = []
    cutoff = time.time() - min_age_s
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
            for name in filenames:
                if not PARTIAL_WRITE.fullmatch(name):
                    continue
                path = Path(dirpath) / name
                try:
                    if path.is_symlink() or path.lstat().st_mtime > cutoff:
                        continue
                    path.unlink()
                except OSError as exc:
                    log.warning("could not remove the partial write %s: %s", path, exc)
                    continue
                removed.append(path)
    if removed:
        log.warning("removed %d half-written file(s) left by an earlier crash", len(removed))
    return removed
