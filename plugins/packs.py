"""Plugin packs on disk: finding them, what happened to each (the report), and reading their source.

A pack is a folder in custom_nodes/ with an `__init__.py` (or a single `custom_nodes/name.py`).
`signature` tells the reloader a pack changed; `scan_node_names` names the nodes of a pack that
failed to import, without running it, so a workflow using them is told which pack failed and why.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

_SCAN_MAX_FILES = 300
_SCAN_MAX_BYTES = 2 * 1024 * 1024
_SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", "web", "js", "tests", "test"})

LOADED, FAILED, SKIPPED, TIMED_OUT = "loaded", "failed", "skipped", "timed_out"


@dataclass(kw_only=True)
class PackReport:
    """What happened to one pack; the JSON of GET /plugins."""

    name: str
    path: str
    status: str = SKIPPED
    protocol: str | None = None  # "sumie", "comfy_v1", "comfy_v3", or several joined by "+"
    api_version: int | None = None
    module: str | None = None
    error: str | None = None
    traceback: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    node_errors: dict[str, str] = field(default_factory=dict)  # node name -> why it was not registered
    conflicts: dict[str, str] = field(default_factory=dict)  # node name -> who keeps it
    likely_nodes: list[str] = field(default_factory=list)  # from a source scan, for a failed pack
    web_directory: str | None = None
    import_seconds: float = 0.0
    slow: bool = False
    signature: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "status": self.status, "protocol": self.protocol,
            "api_version": self.api_version, "module": self.module, "error": self.error,
            "traceback": self.traceback, "nodes": self.nodes, "node_errors": self.node_errors,
            "conflicts": self.conflicts, "likely_nodes": self.likely_nodes,
            "web_directory": f"/extensions/{self.name}" if self.web_directory else None,
            "import_seconds": round(self.import_seconds, 3), "slow": self.slow,
        }


@dataclass(frozen=True, kw_only=True)
class PackSource:
    name: str
    path: Path  # the folder, or the single .py file
    init: Path  # the file to execute

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()


def discover(dirs: Iterable[Path]) -> list[PackSource]:
    """Packs in the plugin folders, sorted by name; `*.disabled` and hidden entries are skipped."""
    found: dict[str, PackSource] = {}
    for base in dirs:
        base = Path(base)
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir(), key=lambda p: p.name):
            name = entry.name
            if name.startswith((".", "__")) or name.endswith(".disabled"):
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                source = PackSource(name=name, path=entry, init=entry / "__init__.py")
            elif entry.is_file() and entry.suffix == ".py":
                source = PackSource(name=entry.stem, path=entry, init=entry)
            else:
                continue
            found.setdefault(source.name, source)
    return sorted(found.values(), key=lambda s: s.name)


def _py_files(source: PackSource) -> list[Path]:
    if not source.is_package:
        return [source.path]
    files: list[Path] = []
    for root, dirnames, filenames in os.walk(source.path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fname in sorted(filenames):
            if fname.endswith(".py"):
                files.append(Path(root) / fname)
                if len(files) >= _SCAN_MAX_FILES:
                    return files
    return files


def signature(source: PackSource) -> str:
    """Changes when any of the pack's Python files is added, removed or modified (for reloading)."""
    h = blake2b(digest_size=8)
    for path in _py_files(source):
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{path}:{st.st_mtime_ns}:{st.st_size};".encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def scan_node_names(source: PackSource) -> list[str]:
    """Node names a pack's source declares, without running it (for a pack that failed to import).

    Finds the keys of `NODE_CLASS_MAPPINGS = {...}`, `NODE_CLASS_MAPPINGS["X"] = ...` and
    `NODE_CLASS_MAPPINGS.update({...})`, `node_type="X"` in our own schemas and `node_id="X"` in V3 ones.
    """
    names: dict[str, None] = {}

    def keys_of(node: ast.AST) -> None:
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    names[key.value] = None

    for path in _py_files(source):
        try:
            if path.stat().st_size > _SCAN_MAX_BYTES:
                continue
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == "NODE_CLASS_MAPPINGS" and node.value is not None:
                        keys_of(node.value)
                    elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                          and target.value.id == "NODE_CLASS_MAPPINGS" and isinstance(target.slice, ast.Constant)
                          and isinstance(target.slice.value, str)):
                        names[target.slice.value] = None
            elif isinstance(node, ast.Call):
                func = node.func
                if (isinstance(func, ast.Attribute) and func.attr == "update" and isinstance(func.value, ast.Name)
                        and func.value.id == "NODE_CLASS_MAPPINGS" and node.args):
                    keys_of(node.args[0])
                for kw in node.keywords:
                    if (kw.arg in ("node_type", "node_id") and isinstance(kw.value, ast.Constant)
                            and isinstance(kw.value.value, str)):
                        names[kw.value.value] = None
    return list(names)
