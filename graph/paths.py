"""Safe file names for everything a workflow or a request may name: input images, outputs, uploads.

Names arrive from untrusted JSON (`LoadImage.image`, `SaveImage.filename_prefix`, `/view?filename=`),
so they are checked as text first (no `..`, no absolute paths, drive letters, backslashes, NUL or
control characters) and then by containment: the real path, symlinks resolved, must stay inside
the root. Writes go to a temporary file in the same folder, are fsynced and renamed into place, so
a crash or a full disk never leaves a truncated file under the final name. Torch-free: shared by the
nodes and the server.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import shown

_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT_BYTES = 255
_MAX_COUNTER_DIGITS = 12


class UnsafePathError(ValueError):
    """A name that would leave its folder or cannot name a file safely (a client error, never a 500)."""


def check_name(name: str, *, what: str = "path") -> list[str]:
    """The '/'-separated components of a relative name, or UnsafePathError saying what is wrong.

    Empty components ("" or "a//b") are dropped, so an empty subfolder means the root itself.
    """
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be text, got {type(name).__name__}")
    quoted = shown(name)
    if "\x00" in name:
        raise UnsafePathError(f"{what} {quoted} contains a NUL byte")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafePathError(f"{what} {quoted} contains a control character")
    if "\\" in name:
        raise UnsafePathError(f"{what} {quoted} contains a backslash; use '/' between folders")
    if name.startswith("/"):
        raise UnsafePathError(f"{what} {quoted} is absolute; give a name relative to the folder")
    components = [c for c in name.split("/") if c]
    for comp in components:
        if comp in (".", ".."):
            raise UnsafePathError(f"{what} {quoted} contains '{comp}'; names may not leave their folder")
        if _DRIVE.match(comp):
            raise UnsafePathError(f"{what} {quoted} looks like a drive letter path; give a relative name")
        if len(comp.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:
            raise UnsafePathError(f"{what} {quoted} has a component longer than {_MAX_COMPONENT_BYTES} bytes")
    return components


def is_inside(real: str, real_root: str) -> bool:
    """Whether the resolved path `real` is `real_root` or lies below it (both already realpath'd).

    The one containment test for every folder a name may not leave: nodes, server and plugin shim.
    """
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def walk_inside(root: str | os.PathLike[str], *,
                enter: Callable[[str, str], bool] | None = None) -> Iterator[tuple[str, str]]:
    """(relative posix name, real path) of everything below `root` that is not a folder walked into.

    Hidden names are skipped; a symlink is followed only while its target stays inside the root
    (one leading outside is never listed), a symlink loop is walked once and an unreadable folder
    is passed over. A folder is walked into when `enter(rel, real)` says so (by default always);
    one that is not is yielded like a file.
    """
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        return
    seen: set[str] = set()
    stack = [("", real_root)]
    while stack:
        rel_dir, real_dir = stack.pop()
        if real_dir in seen:
            continue
        seen.add(real_dir)
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}{entry.name}"
            real = os.path.realpath(entry.path)
            if not is_inside(real, real_root):
                continue
            if os.path.isdir(real) and (enter is None or enter(rel, real)):
                stack.append((rel + "/", real))
            else:
                yield rel, real


def safe_join(root: str | os.PathLike[str], *parts: str, file: bool = True) -> Path:
    """`root / parts...`, refusing anything that could end up outside `root`.

    Each part may hold '/'-separated folders (a `subfolder` such as "a/b"). With `file=True` (the
    default) the last part must name a file: an empty name is refused. Symlinks are allowed only
    when their real target stays inside the root.
    """
    components: list[str] = []
    for i, part in enumerate(parts):
        what = "file name" if file and i == len(parts) - 1 else "folder name"
        if file and i == len(parts) - 1 and (not isinstance(part, str) or not part.strip("/")
                                             or part.endswith("/")):
            raise UnsafePathError(f"{what} {part!r} is empty; a file name is required")
        components.extend(check_name(part, what=what))
    if file and not parts:
        raise UnsafePathError("a file name is required")
    root_path = Path(root)
    root_real = os.path.realpath(root_path)
    candidate = os.path.realpath(os.path.join(root_real, *components))
    if not is_inside(candidate, root_real):
        raise UnsafePathError(f"{'/'.join(components)!r} resolves outside its folder (through a symlink)")
    return root_path.joinpath(*components)


# "name.png [output]": the editor's way of naming a file in another folder (ComfyUI's annotation).
_ANNOTATIONS = (" [input]", " [output]", " [temp]")


def split_annotation(name: str) -> tuple[str, str]:
    """`"x.png [output]"` -> `("x.png", "output")`; unannotated names are in the input folder."""
    for tag in _ANNOTATIONS:
        if name.endswith(tag):
            return name[: -len(tag)], tag.strip(" []")
    return name, "input"


@dataclass(frozen=True, kw_only=True)
class OutputName:
    """Where a numbered output goes: the full path, and the (subfolder, filename) that /view takes."""

    path: Path
    subfolder: str
    filename: str
    counter: int


def split_prefix(filename_prefix: str) -> tuple[str, str]:
    """`"a/b/name"` -> `("a/b", "name")`, refusing prefixes that would leave the folder."""
    components = check_name(filename_prefix, what="filename_prefix")
    if filename_prefix.endswith("/") or not components:
        return "/".join(components), ""
    return "/".join(components[:-1]), components[-1]


def next_counter(folder: Path, base: str) -> int:
    """One more than the highest `{base}_{counter}_...` already in `folder` (1 when there is none)."""
    pattern = re.compile(re.escape(base) + rf"_(\d{{1,{_MAX_COUNTER_DIGITS}}})_")
    highest = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                m = pattern.match(entry.name)
                if m:
                    highest = max(highest, int(m[1]))
    except FileNotFoundError:
        return 1
    return highest + 1


def unique_output_path(root: str | os.PathLike[str], filename_prefix: str, ext: str, *,
                       counter: int | None = None) -> OutputName:
    """The next free `{prefix}_{counter:05}_.{ext}` under `root` (subfolders created as needed).

    Counting continues from the highest counter already there, whatever its extension, as ComfyUI
    does. Pass `counter` to number the following images of a batch without rescanning. The name
    is only a proposal: write it with `atomic_write(..., overwrite=False)` and try the next counter
    if another writer took it first.
    """
    if not ext or "/" in ext or "\\" in ext or "\x00" in ext or ext.startswith("."):
        raise UnsafePathError(f"bad file extension {ext!r}")
    subfolder, base = split_prefix(filename_prefix)
    folder = safe_join(root, subfolder, file=False)
    folder.mkdir(parents=True, exist_ok=True)
    # mkdir followed any symlink inside; check the created folder still resolves inside the root.
    safe_join(root, subfolder, file=False)
    if counter is None:
        counter = next_counter(folder, base)
    filename = f"{base}_{counter:05}_.{ext}"
    return OutputName(path=safe_join(folder, filename), subfolder=subfolder, filename=filename, counter=counter)


def atomic_write(path: str | os.PathLike[str], data_writer: Callable[[BinaryIO], object], *,
                 overwrite: bool = True) -> Path:
    """Write a file so that it appears whole or not at all.

    `data_writer(f)` writes into a temporary file in the same folder (created exclusively, never
    through a symlink); it is fsynced and renamed over `path`. A symlink at `path` is replaced, not
    written through. With `overwrite=False` an existing `path` raises FileExistsError instead (used
    to claim numbered output names without races). On any failure (a full disk, an exception in
    the writer) the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    folder = path.parent
    stem = path.name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")  # bytes: names cap at 255
    tmp = folder / f".{stem}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            data_writer(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_overwrite(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)
    return path


def _link_no_overwrite(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` unless `path` exists (a hard link fails atomically when it does)."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a filesystem without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def fsync_dir(folder: Path) -> None:
    """Make the rename durable; some filesystems cannot fsync a directory, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
