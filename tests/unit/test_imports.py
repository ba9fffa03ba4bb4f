"""The shape of the code base, read from the source (AST; nothing is imported): the layers' imports
form no cycle, between files or between packages; the engine (graph/) never reaches for the plugin
machinery or the ComfyUI compatibility layer; and no Python file grows past 500 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("graph", "server", "nodes", "cli", "plugins")
KNOWN_TOP = (*LAYERS, "compat")  # where an import may land and still be ours
MAX_LINES = 500
NOT_OURS = (ROOT / ".venv", ROOT / "web" / "vendor", ROOT / ".git")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the project's packages (those of LAYERS and compat) by dotted name."""
    found: dict[str, Path] = {}
    for top in KNOWN_TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def package_of(name: str) -> str:
    """The package a module lives in: its folder (a package's __init__ belongs to the package itself)."""
    path = modules()[name]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = package_of(module).split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str) -> str | None:
    """The module of ours that importing `name` executes last (the longest known prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


@cache
def imports_of(module: str) -> frozenset[str]:
    """Modules of ours that `module` imports anywhere in its body (lazy imports in functions count too)."""
    tree = ast.parse(modules()[module].read_bytes(), filename=str(modules()[module]))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name)
            if owner is not None and owner != module:
                targets.add(owner)
    return frozenset(targets)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def layer_modules() -> list[str]:
    return [name for name in modules() if name.split(".")[0] in LAYERS]


def file_edges() -> dict[str, set[str]]:
    return {name: {t for t in imports_of(name) if t.split(".")[0] in LAYERS} for name in layer_modules()}


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, targets in file_edges().items():
        source = package_of(name)
        edges.setdefault(source, set()).update(package_of(t) for t in targets if package_of(t) != source)
    return edges


def describe(found: Iterable[list[str]], edges: dict[str, set[str]]) -> str:
    lines = []
    for component in found:
        members = set(component)
        links = [f"{a} -> {b}" for a in component for b in sorted(edges.get(a, ())) if b in members]
        lines.append(f"{' <-> '.join(component)}: {', '.join(links)}")
    return "\n".join(lines)


def test_the_walk_sees_the_imports():
    """The walker itself: relative, absolute, `from package import module` and lazy imports all count."""
    assert "graph.errors" in imports_of("graph.workflow")  # from .errors import Issue
    assert "graph.documents" in imports_of("server.api_queue")  # from graph.documents import ...
    assert "plugins.comfy_v1" in imports_of("plugins.manager")
    assert "server.cli" in imports_of("cli.args")  # from server import cli
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_files():
    edges = file_edges()
    found = cycles(edges)
    assert not found, "import cycles between files:\n" + describe(found, edges)


def test_no_import_cycle_between_packages():
    edges = package_edges()
    found = cycles(edges)
    assert not found, "import cycles between packages:\n" + describe(found, edges)


@pytest.mark.parametrize("forbidden", ["compat", "plugins"])
def test_the_engine_never_imports_the_plugin_machinery(forbidden):
    bad = [f"{name} -> {target}" for name in modules() if name.split(".")[0] == "graph"
           for target in imports_of(name) if target.split(".")[0] == forbidden]
    assert not bad, f"graph/ must not import {forbidden}/: " + ", ".join(bad)


def test_no_python_file_is_over_500_lines():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(path.is_relative_to(skip) for skip in NOT_OURS):
            continue
        lines = path.read_bytes().count(b"\n")
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, f"files over {MAX_LINES} lines (split them by what they own):\n" + "\n".join(long)
