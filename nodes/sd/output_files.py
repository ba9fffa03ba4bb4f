"""Numbered output files: how every saving node (images, animations, latents) names and writes a file.

A `filename_prefix` comes from an untrusted workflow. It may name subfolders but never leave the
folder (`graph.paths`); ComfyUI's server-side variables (%width%, %year%, ...) are expanded first.
Files are named `{prefix}_{counter:05}_.{ext}`, counting on from the highest counter already there,
and written atomically (temporary file, fsync, rename without overwriting): a full disk fails the
node without leaving a truncated file, and two writers never take the same name.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graph.names import check_prefix
from graph.paths import UnsafePathError, atomic_write, unique_output_path

# Tries to claim a free name when other writers keep taking the one proposed.
_MAX_ATTEMPTS = 1000


def expand_prefix(prefix: str, width: int, height: int) -> str:
    """ComfyUI's server-side prefix variables: %width%, %height%, %year% ... %second%."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": str(width), "height": str(height), "year": str(now.tm_year),
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}",
              "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def checked_prefix(filename_prefix: str, width: int, height: int, *, node: str) -> str:
    """The expanded prefix, or UnsafePathError naming the node and input when it would leave the folder."""
    try:
        prefix = expand_prefix(filename_prefix, width, height)
        check_prefix(prefix)
    except UnsafePathError as exc:
        raise UnsafePathError(f"{node}, input 'filename_prefix': {exc}") from None
    return prefix


def write_numbered(root: Path, prefix: str, ext: str, writer: Callable[[BinaryIO], object], *, kind: str,
                   node: str, counter: int | None = None) -> tuple[dict[str, str], int]:
    """Write one `{prefix}_{counter:05}_.{ext}` under `root` atomically.

    Returns the editor's reference to it (`filename`, `subfolder`, `type`) and the counter the next
    file of the same batch should try, so a batch is numbered without rescanning the folder.
    """
    for _attempt in range(_MAX_ATTEMPTS):
        try:
            target = unique_output_path(root, prefix, ext, counter=counter)
        except OSError as exc:  # e.g. a file where a subfolder of the prefix should be
            raise OSError(exc.errno, f"{node}: cannot use prefix {prefix!r} in the {kind} folder: "
                                     f"{exc.strerror or exc}") from exc
        try:
            atomic_write(target.path, writer, overwrite=False)
        except FileExistsError:
            counter = None  # another writer took this number: rescan the folder
            continue
        except OSError as exc:
            where = f"{target.subfolder}/{target.filename}" if target.subfolder else target.filename
            raise OSError(exc.errno, f"{node}: could not write {where} in the {kind} folder: "
                                     f"{exc.strerror or exc}") from exc
        ref = {"filename": target.filename, "subfolder": target.subfolder, "type": kind}
        return ref, target.counter + 1
    raise FileExistsError(errno.EEXIST, f"{node}: no free file name for prefix {prefix!r}")
