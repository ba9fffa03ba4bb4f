"""Safe paths and atomic writes for everything a client names: /view, uploads, userdata, extensions.

A client-supplied path is checked twice: its text (no `..`, absolute path, drive letter, backslash,
NUL or control character, no hidden component) and then where it really lands (realpath, so a
symlink inside a folder cannot lead outside it). Writes go to a hidden temporary file that is
fsynced and renamed into place, so a crash never leaves a half-written file under a visible name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from graph.names import check_servable
from graph.paths import UnsafePathError, atomic_write, check_name, is_inside

FOLDER_TYPES = ("output", "input", "temp")


class PathError(ValueError):
    """A rejected path; `status` is the HTTP answer (400 bad syntax, 403 escapes its folder, 404 missing)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def folder_root(folders: Any, kind: str) -> Path:
    if kind not in FOLDER_TYPES:
        raise PathError(f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind[:40]!r}")
    return Path(getattr(folders, kind))


def split_relative(text: str, what: str, *, nested: bool = True, allow_empty: bool = False) -> list[str]:
    """The components of a client-supplied relative path, or PathError saying what is wrong with it.

    graph.paths.check_name refuses what could leave the folder (NUL, control characters, backslashes,
    absolute paths, drive letters, '..'); a client may also not name hidden files (half-written
    temporaries) or reserved device names.
    """
    if not isinstance(text, str):
        raise PathError(f"{what} must be text")
    try:
        parts = check_name(text, what=what)
    except UnsafePathError as exc:
        raise PathError(str(exc)) from None
    try:
        check_servable(text, parts, what=what)  # the same rule SaveImage's prefix obeys
    except UnsafePathError as exc:
        raise PathError(str(exc)) from None
    if not parts and not allow_empty:
        raise PathError(f"{what} is empty")
    if not nested and len(parts) > 1:
        raise PathError(f"{what} must be a plain file name without '/'")
    return parts


def contained(root: Path, parts: list[str]) -> Path:
    """root/parts with symlinks resolved; PathError(403) when that lands outside root."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, *parts))
    if not is_inside(target, real_root):
        raise PathError("the path leads outside its folder (through a symbolic link)", status=403)
    return Path(target)


def resolve_file(root: Path, subfolder: str, filename: str) -> Path:
    """An existing regular file named by a client, inside root."""
    parts = split_relative(subfolder, "subfolder", allow_empty=True) + split_relative(filename, "filename")
    path = contained(root, parts)
    if not path.is_file():
        raise PathError(f"no such file: {'/'.join(parts)}", status=404)
    return path


def prepare_dir(root: Path, subfolder: str) -> Path:
    """The (created) folder a client wants to write into, inside root."""
    parts = split_relative(subfolder, "subfolder", allow_empty=True)
    root.mkdir(parents=True, exist_ok=True)
    target = contained(root, parts)
    target.mkdir(parents=True, exist_ok=True)
    return contained(root, parts)  # again: a folder swapped for a symlink meanwhile is caught here


def numbered(name: str, i: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return f"{name} ({i})"
    return f"{stem} ({i}).{ext}"


def write_atomic(directory: Path, name: str, data: bytes, *, overwrite: bool,
                 same: Callable[[Path], bool] | None = None) -> str:
    """Write `data` as directory/name (whole or not at all) and return the name used.

    Without overwrite an existing name gets " (1)", " (2)"... appended, unless `same(existing)` says
    the existing file already holds this content (a re-upload), whose name is then returned.
    """
    def writer(f: BinaryIO) -> None:
        f.write(data)

    if overwrite:
        target = directory / name
        if target.is_dir() and not target.is_symlink():
            raise PathError(f"{name!r} is a folder", status=409)
        atomic_write(target, writer)  # replaces a symlink itself, never the file it points to
        return name
    for i in range(0, 10_000):
        candidate = name if i == 0 else numbered(name, i)
        target = directory / candidate
        if os.path.lexists(target):
            if same is not None and target.is_file() and not target.is_symlink() and same(target):
                return candidate
            continue
        try:
            atomic_write(target, writer, overwrite=False)  # no silent overwrite if the name appeared
        except FileExistsError:
            continue
        return candidate
    raise PathError(f"too many files named like {name!r}", status=409)


def list_files(root: Path, *, recurse: bool) -> list[Path]:
    """Regular, non-hidden files under root (symlinks leading outside it are skipped)."""
    real_root = os.path.realpath(root)
    found: list[Path] = []
    if not os.path.isdir(real_root):
        return found
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            full = os.path.join(dirpath, fname)
            real = os.path.realpath(full)
            if not is_inside(real, real_root) or not os.path.isfile(real):
                continue
            found.append(Path(os.path.relpath(full, real_root)))
    return found
