"""`plugins check`: which of a pack's imports Sumie provides, before the pack is installed or run.

Reads the pack's source (never runs it) and sorts every absolute import:

- ComfyUI names (`folder_paths`, `comfy.*`, `nodes`, `server`, `comfy_api`, `node_helpers`,
  `latent_preview`, `comfy_extras`, ...): "provided" when the compatibility layer serves the module and
  every name the pack takes from it (`from comfy.utils import X`, and attribute uses such as
  `comfy.samplers.KSampler.SAMPLERS` or `mm.get_torch_device`), else "missing" with what is absent;
- other packages: "installed" or "not installed" (the pack's own modules and the standard library are skipped).

An import inside `try: ... except ImportError` is "guarded": the pack handles its absence itself.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .packs import PackSource, _py_files

_UNRESOLVED = object()


@dataclass(kw_only=True)
class ImportCheck:
    module: str
    status: str  # "provided" | "missing" | "installed" | "not installed"
    missing: list[str] = field(default_factory=list)  # names or attribute paths the layer lacks
    files: list[str] = field(default_factory=list)
    guarded: bool = True  # every occurrence is inside try/except ImportError

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "status": self.status, "missing": self.missing, "files": self.files,
                "guarded": self.guarded}


@dataclass
class _Use:
    names: set[str] = field(default_factory=set)  # from X import names
    attrs: set[str] = field(default_factory=set)  # X.attr.attr chains used
    files: set[str] = field(default_factory=set)
    guarded: bool = True


def _guarded_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            bare = any(h.type is None for h in node.handlers)
            if bare or any(k in caught for k in ("ImportError", "ModuleNotFoundError", "Exception")):
                for stmt in node.body:
                    lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value  # type: ignore[assignment]
    if not isinstance(node, ast.Name):
        return None
    return node.id, parts[::-1]


def _scan(source: PackSource, local: set[str]) -> dict[str, _Use]:
    uses: dict[str, _Use] = {}
    for path in _py_files(source):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        guarded = _guarded_lines(tree)
        bound: dict[str, tuple[str, list[str]]] = {}  # local name -> (import's module, path from its top)
        rel = str(path.relative_to(source.path)) if source.is_package else path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    use = uses.setdefault(alias.name, _Use())
                    use.files.add(rel)
                    use.guarded &= node.lineno in guarded
                    if alias.asname:
                        bound[alias.asname] = (alias.name, alias.name.split(".")[1:])
                    else:
                        bound.setdefault(alias.name.partition(".")[0], (alias.name, []))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                use = uses.setdefault(node.module, _Use())
                use.files.add(rel)
                use.guarded &= node.lineno in guarded
                use.names.update(a.name for a in node.names if a.name != "*")
                for a in node.names:
                    if a.name != "*":
                        bound[a.asname or a.name] = (node.module, [*node.module.split(".")[1:], a.name])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None), ast.Store):
                found = _chain(node)
                if found is None or found[0] not in bound:
                    continue
                module, prefix = bound[found[0]]
                imported = uses[module]
                top = module.partition(".")[0]
                full = [top, *prefix, *found[1]]
                if not prefix:  # `import comfy.x` binds `comfy`: a chain through another submodule is its own
                    module = top
                # file the use under the longest module this file imports that the chain goes through
                for cut in range(len(full), 0, -1):
                    if ".".join(full[:cut]) in uses and rel in uses[".".join(full[:cut])].files:
                        module = ".".join(full[:cut])
                        break
                entry = uses.get(module)
                if entry is None:  # a submodule reached through another import (`import comfy.x`, then comfy.y)
                    entry = uses[module] = _Use(guarded=imported.guarded)
                entry.attrs.add(".".join(full[1:]))
                entry.files.add(rel)
    return {m: u for m, u in uses.items() if m.partition(".")[0] not in local and u.files}


def _resolve(module: Any, chain: list[str], base: str) -> str | None:
    """The first name of `chain` the served module lacks (None when all resolve)."""
    obj = module
    path = base
    for name in chain:
        path = f"{path}.{name}"
        if isinstance(obj, type(sys)):
            try:
                value = getattr(obj, name)
            except AttributeError:
                try:
                    value = importlib.import_module(f"{obj.__name__}.{name}")
                except ImportError:
                    return path
        else:
            value = getattr(obj, name, _UNRESOLVED)
            if value is _UNRESOLVED:
                return path
        obj = value
        if not isinstance(obj, (type, type(sys))):
            return None  # a function or value: what it returns is not checked
    return None


def _comfy_check(module_name: str, use: _Use) -> ImportCheck:
    compat = importlib.import_module("compat")
    top, _, rest = module_name.partition(".")
    check = ImportCheck(module=module_name, status="provided", files=sorted(use.files), guarded=use.guarded)
    if top not in compat.ALIASES:
        check.status, check.missing = "missing", [module_name]
        return check
    target = compat.ALIASES[top] + ("." + rest if rest else "")
    try:
        served = importlib.import_module(target)
    except ImportError:
        check.status, check.missing = "missing", [module_name]
        return check
    for name in sorted(use.names):
        gap = _resolve(served, [name], module_name)
        if gap is not None:
            check.missing.append(gap)
    base = importlib.import_module(compat.ALIASES[top])
    for chain in sorted(use.attrs):
        gap = _resolve(base, chain.split("."), top)
        if gap is not None and gap not in check.missing:
            check.missing.append(gap)
    if check.missing:
        check.status = "missing"
    return check


def check_imports(source: PackSource) -> list[ImportCheck]:
    """Every absolute import of the pack, sorted into provided / missing / installed / not installed."""
    compat = importlib.import_module("compat")
    comfy_names = set(compat.ALIASES) | set(compat.COMFY_INTERNALS) | {"comfy_aimdo", "execution", "app"}
    base = source.path if source.is_package else source.path.parent
    local = {p.stem for p in base.glob("*.py")} | {p.name for p in base.iterdir() if p.is_dir()}
    if source.is_package:  # modules the pack imports from subfolders it puts on sys.path
        for path in _py_files(source):
            local.add(path.stem)
            local.update(part for part in path.relative_to(base).parts[:-1])
    local.add(source.name)
    checks: list[ImportCheck] = []
    for module_name, use in sorted(_scan(source, local).items()):
        top = module_name.partition(".")[0]
        if top in comfy_names:
            checks.append(_comfy_check(module_name, use))
        elif top in sys.stdlib_module_names or top == "__future__":
            continue
        else:
            try:
                found = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                found = False
            checks.append(ImportCheck(module=module_name, status="installed" if found else "not installed",
                                      files=sorted(use.files), guarded=use.guarded))
    return checks


@contextlib.contextmanager
def builtin_nodes_bound() -> Iterator[None]:
    """While checking, `nodes.X` resolves against the built-in nodes (the layer reads a node registry)."""
    import main

    runtime = importlib.import_module("compat._runtime")
    registry = main.build_registry()

    class _Bound:
        folders = registry.folders
        server = None

    _Bound.registry = registry  # type: ignore[attr-defined]
    previous = runtime.manager
    runtime.bind(_Bound)
    try:
        yield
    finally:
        runtime.bind(previous)


__all__ = ["ImportCheck", "builtin_nodes_bound", "check_imports"]
