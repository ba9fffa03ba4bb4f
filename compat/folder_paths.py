"""`folder_paths` for ComfyUI packs: model kinds and the input/output/temp/user folders, contained.

The folders are the engine's (`Folders`): those of the running node, else those the plugin manager
was started with. Module attributes such as `models_dir` or `output_directory` are read live.
Names from workflows are untrusted, so every lookup refuses `..`, absolute paths and symlinks that
leave their folder (ComfyUI's own module does not).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from graph.node import KIND_FOLDERS
from graph.paths import (
    UnsafePathError,
    check_name,
    next_counter,
    safe_join,
    split_annotation,
    split_prefix,
    walk_inside,
)

from . import _runtime

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

_CONFIG_EXTENSIONS = {".yaml"}

# kind -> ([folders], {extensions}); packs read and extend it (add_model_folder_path does too).
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
_standard_paths: dict[str, list[str]] = {}
_overrides: dict[str, str] = {}


def refresh() -> None:
    """Point the standard kinds at the current models folder; kinds and paths packs added are kept."""
    models = Path(_runtime.folders().models)
    for kind, subs in KIND_FOLDERS.items():
        fresh = [str(models / sub) for sub in subs]
        old = _standard_paths.get(kind, [])
        entry = folder_names_and_paths.get(kind)
        added = [p for p in entry[0] if p not in old] if entry else []
        exts = entry[1] if entry else (set(_CONFIG_EXTENSIONS) if kind == "configs" else set(supported_pt_extensions))
        folder_names_and_paths[kind] = (fresh + [p for p in added if p not in fresh], exts)
        _standard_paths[kind] = fresh


def _folder(kind: str) -> str:
    if kind in _overrides:
        return _overrides[kind]
    return str(getattr(_runtime.folders(), kind))


def __getattr__(name: str) -> Any:
    live = {"models_dir": lambda: str(_runtime.folders().models), "output_directory": lambda: _folder("output"),
            "input_directory": lambda: _folder("input"), "temp_directory": lambda: _folder("temp"),
            "user_directory": lambda: _folder("user"), "base_path": lambda: str(Path(_folder("user")).parent)}
    if name in live:
        return live[name]()
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r} (Sumie's compatibility layer)")


def get_input_directory() -> str:
    return _folder("input")


def get_output_directory() -> str:
    return _folder("output")


def get_temp_directory() -> str:
    return _folder("temp")


def get_user_directory() -> str:
    return _folder("user")


def set_input_directory(path: str) -> None:
    _overrides["input"] = str(path)


def set_output_directory(path: str) -> None:
    _overrides["output"] = str(path)


def set_temp_directory(path: str) -> None:
    _overrides["temp"] = str(path)


def get_directory_by_type(type_name: str) -> str | None:
    return {"output": get_output_directory, "input": get_input_directory,
            "temp": get_temp_directory}.get(type_name, lambda: None)()


def _entry(kind: str) -> tuple[list[str], set[str]]:
    if not folder_names_and_paths:
        refresh()
    entry = folder_names_and_paths.get(kind)
    if entry is None:
        raise KeyError(f"unknown model folder kind {kind!r}")
    return entry


def get_folder_paths(folder_name: str) -> list[str]:
    return list(_entry(folder_name)[0])


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if not folder_names_and_paths:
        refresh()
    paths, exts = folder_names_and_paths.get(folder_name, ([], set(supported_pt_extensions)))
    path = str(full_folder_path)
    if path in paths:
        paths.remove(path)
    paths.insert(0, path) if is_default else paths.append(path)
    folder_names_and_paths[folder_name] = (paths, exts)


def filter_files_extensions(files: Any, extensions: Any) -> list[str]:
    exts = {e.lower() for e in extensions}
    return sorted(f for f in files if not exts or os.path.splitext(f)[1].lower() in exts)


def recursive_search(directory: str, excluded_dir_names: Any = None) -> tuple[list[str], dict[str, float]]:
    """Relative posix names of the files under `directory` (symlinks leaving it are skipped), and mtimes."""
    excluded = set(excluded_dir_names or ())
    dirs: dict[str, float] = {}

    def enter(rel: str, real: str) -> bool:
        if rel.rsplit("/", 1)[-1] in excluded:
            return False
        try:
            dirs[real] = os.path.getmtime(real)
        except OSError:
            return False
        return True

    root = os.path.realpath(directory)
    if not os.path.isdir(root) or not enter("", root):
        return [], dirs
    return [rel for rel, real in walk_inside(root, enter=enter) if os.path.isfile(real)], dirs


def get_filename_list(folder_name: str) -> list[str]:
    paths, exts = _entry(folder_name)
    names: set[str] = set()
    for path in paths:
        names.update(filter_files_extensions(recursive_search(path, excluded_dir_names=[".git"])[0], exts))
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file `filename` of a model kind, or None (also for names that would leave the folder)."""
    try:
        parts = check_name(filename, what="model name")
    except UnsafePathError:
        return None
    if not parts:
        return None
    for path in _entry(folder_name)[0]:
        try:
            candidate = safe_join(path, *parts)
        except UnsafePathError:
            continue
        if candidate.is_file():
            return str(candidate)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    found = get_full_path(folder_name, filename)
    if found is None:
        raise FileNotFoundError(f"model in folder '{folder_name}' with filename '{filename}' not found")
    return found


def annotated_filepath(name: str) -> tuple[str, str | None]:
    plain, kind = split_annotation(name)
    return (plain, _folder(kind)) if plain != name else (name, None)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """`"x.png [output]"` -> the path in the output folder (input by default); refuses names that leave it."""
    plain, base = annotated_filepath(name)
    base = base or default_dir or get_input_directory()
    parts = check_name(plain, what="file name")
    return str(safe_join(base, *parts))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except (UnsafePathError, ValueError):
        return False


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """(full_output_folder, filename, counter, subfolder, filename_prefix), as ComfyUI's returns it.

    Files are then written as f"{filename}_{counter:05}_.png"; the prefix never leaves `output_dir`.
    """
    prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
    subfolder, filename = split_prefix(prefix)
    folder = safe_join(output_dir, subfolder, file=False) if subfolder else Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder), filename, next_counter(folder, filename), subfolder, prefix
