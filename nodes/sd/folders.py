"""Model folders under `folders.models`: what each kind lists and how a chosen name becomes a path.

A name comes from a workflow, so it is untrusted: `resolve` refuses anything that could leave the
kind's folder (`..`, absolute paths, drive letters, backslashes, NUL, symlinks pointing outside),
checking the text first and then where the path really lands (realpath containment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.models.errors import ModelLoadError

WEIGHT_EXTENSIONS = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"})

# Each kind reads these subfolders of models/, first match wins (ComfyUI's legacy and new names
# share files: clip <-> text_encoders, unet <-> diffusion_models).
KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "vae": ("vae",),
    "loras": ("loras",),
    "embeddings": ("embeddings",),
    "clip": ("clip", "text_encoders"),
    "text_encoders": ("text_encoders", "clip"),
    "unet": ("unet", "diffusion_models"),
    "diffusion_models": ("diffusion_models", "unet"),
    "controlnet": ("controlnet",),
    "upscale_models": ("upscale_models",),
    "clip_vision": ("clip_vision",),
    "hypernetworks": ("hypernetworks",),
}
MODEL_KINDS = tuple(KIND_FOLDERS)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ModelPathError(ModelLoadError):
    """A model name that is malformed, escapes its folder or names no file."""


def _kind_dirs(folders: Any, kind: str) -> list[Path]:
    if kind not in KIND_FOLDERS:
        raise ValueError(f"unknown model folder kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    root = Path(folders.models)
    return [root / sub for sub in KIND_FOLDERS[kind]]


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model_index.json"))


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _walk(base: Path, *, folders_as_models: bool) -> list[str]:
    """Relative posix names of weight files under base (and diffusers folders when asked)."""
    real_root = os.path.realpath(base)
    if not os.path.isdir(real_root):
        return []
    found: list[str] = []
    seen: set[str] = set()
    stack = [("", real_root)]
    while stack:
        rel_dir, real_dir = stack.pop()
        if real_dir in seen:  # a symlink loop inside the folder
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
            if not _inside(real, real_root):
                continue  # a symlink leading outside: never listed, never loaded
            if os.path.isdir(real):
                if folders_as_models and _is_diffusers_folder(real):
                    found.append(rel)
                else:
                    stack.append((rel + "/", real))
            elif os.path.splitext(entry.name)[1].lower() in WEIGHT_EXTENSIONS and os.path.isfile(real):
                found.append(rel)
    return found


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
    if kind not in KIND_FOLDERS:
        raise ValueError(f"unknown model folder kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")

    def choices(folders: Any) -> list[str]:
        return list_files(folders, kind)

    choices.__qualname__ = f"files_of({kind!r})"
    return choices


def check_name(name: str, *, what: str = "model name") -> list[str]:
    """The components of a relative model name, or ModelPathError saying what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise ModelPathError(None, f"{what} must be a non-empty relative path, got {name!r}")
    if "\x00" in name:
        raise ModelPathError(None, f"{what} contains a NUL byte")
    if "\\" in name:
        raise ModelPathError(None, f"{what} {name[:80]!r} contains a backslash; use '/' between folders")
    if name.startswith(("/", "~")) or _DRIVE.match(name) or os.path.isabs(name):
        raise ModelPathError(None, f"{what} {name[:80]!r} must be relative to its model folder")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ModelPathError(None, f"{what} {name[:80]!r} must not contain '..' or be empty")
    return parts


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
        if not _inside(real, real_root) or real == real_root:
            raise ModelPathError(Path(candidate), f"{kind} name {name!r} leads outside {base} (a symlink?); refused")
        if os.path.isfile(real) or (kind == "checkpoints" and os.path.isdir(real) and _is_diffusers_folder(real)):
            return Path(real)
    raise ModelPathError(None, f"no {kind} file {name!r} in {' or '.join(tried)}")


__all__ = ["KIND_FOLDERS", "MODEL_KINDS", "WEIGHT_EXTENSIONS", "ModelPathError", "check_name", "files_of",
           "list_files", "resolve"]
