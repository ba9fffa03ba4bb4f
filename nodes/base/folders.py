"""Model folders under `folders.models`: what each kind lists and how a chosen name becomes a path.

A name comes from a workflow, so it is untrusted: `resolve` refuses anything that could leave the
kind's folder (`..`, absolute paths, drive letters, backslashes, NUL, symlinks pointing outside),
checking the text first and then where the path really lands (realpath containment).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graph import paths
from graph.node import KIND_FOLDERS, MODEL_KINDS
from graph.paths import UnsafePathError, is_inside, walk_inside
from nodes.base.errors import ModelLoadError

WEIGHT_EXTENSIONS = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"})


class ModelPathError(ModelLoadError):
    """A model name that is malformed, escapes its folder or names no file."""


def _check_kind(kind: str) -> None:
    if kind not in KIND_FOLDERS:
        raise ValueError(f"unknown model folder kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")


def _kind_dirs(folders: Any, kind: str) -> list[Path]:
    _check_kind(kind)
    root = Path(folders.models)
    return [root / sub for sub in KIND_FOLDERS[kind]]


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model_index.json"))


def _walk(base: Path, *, folders_as_models: bool) -> list[str]:
    """Relative posix names of weight files under base (and diffusers folders when asked)."""
    def enter(rel: str, real: str) -> bool:
        return not (folders_as_models and _is_diffusers_folder(real))

    return [rel for rel, real in walk_inside(base, enter=enter)
            if os.path.isdir(real) or (os.path.splitext(rel)[1].lower() in WEIGHT_EXTENSIONS and os.path.isfile(real))]


def list_files(folders: Any, kind: str) -> list[str]:
    """Model names of one kind: relative posix paths (with subfolders), sorted, weights files only.

    Checkpoints also list diffusers-format folders (a folder holding model_index.json).
    """
    if folders is None:
        return []
    names: set[str] = set()
    for base in _kind_dirs(folders, kind):
        names.update(_walk(base, folders_as_models=kind == "checkpoints"))
    return sorted(names)


def files_of(kind: str) -> Callable[[Any], list[str]]:
    """Combo choices for a node input: `ComboInput(name="ckpt_name", choices=files_of("checkpoints"))`."""
    _check_kind(kind)

    def choices(folders: Any) -> list[str]:
        return list_files(folders, kind)

    choices.__qualname__ = f"files_of({kind!r})"
    return choices


def check_name(name: str, *, what: str = "model name") -> list[str]:
    """The components of a relative model name (graph.paths.check_name), or ModelPathError."""
    if not isinstance(name, str) or not name.strip("/"):
        raise ModelPathError(None, f"{what} must be a non-empty relative path, got {name!r}")
    if name.startswith("~"):
        raise ModelPathError(None, f"{what} {name[:80]!r} must be relative to its model folder")
    try:
        return paths.check_name(name, what=what)
    except UnsafePathError as exc:
        raise ModelPathError(None, str(exc)) from None


def resolve(folders: Any, kind: str, name: str) -> Path:
    """The file (or diffusers folder) `name` of `kind`, guaranteed to lie inside that kind's folder."""
    parts = check_name(name, what=f"{kind} name")
    if folders is None:
        raise ModelPathError(None, f"cannot find {kind} {name!r}: this engine has no models folder configured")
    tried: list[str] = []
    for base in _kind_dirs(folders, kind):
        real_root = os.path.realpath(base)
        candidate = os.path.join(real_root, *parts)
        real = os.path.realpath(candidate)
        tried.append(str(base))
        if not is_inside(real, real_root) or real == real_root:
            raise ModelPathError(Path(candidate), f"{kind} name {name!r} leads outside {base} (a symlink?); refused")
        if os.path.isfile(real) or (kind == "checkpoints" and os.path.isdir(real) and _is_diffusers_folder(real)):
            return Path(real)
    raise ModelPathError(None, f"no {kind} file {name!r} in {' or '.join(tried)}")


__all__ = ["WEIGHT_EXTENSIONS", "ModelPathError", "check_name", "files_of",
           "list_files", "resolve"]
