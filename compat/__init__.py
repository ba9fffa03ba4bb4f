"""The ComfyUI compatibility layer: the module names ComfyUI packs import, served to packs only.

ComfyUI packs write `import folder_paths`, `import comfy.utils`, `import comfy.model_management`,
`from server import PromptServer` and `import nodes` / `from nodes import NODE_CLASS_MAPPINGS`.
Two of those names, `server` and `nodes`, are our own packages, so the layer must not simply put
aliases into `sys.modules` (that would shadow our packages for our own code, in every thread).

How it avoids that: `install()` wraps `builtins.__import__` once. An import statement is resolved
by the shim only when all of these hold: it is absolute (level 0), its top-level name is one of
`ALIASES` (folder_paths, comfy, server, nodes, comfy_api, node_helpers, latent_preview, comfy_extras,
comfy_execution, execution), and the module executing it is a pack module (its `__name__` is a
pack's module name or below it, or its `__file__` lies in a pack's folder; plugins.manager registers
each pack before importing it). Then `import comfy.utils` resolves to `compat.comfy.utils`, `from
server import PromptServer` to `compat.server`, and so on; every other import, and every import made by our own
code, goes to the real import system untouched. Nothing is added to `sys.modules` under the bare
names, so `import server` in our code (or in a test) is always our server package.

`importlib.import_module("folder_paths")` does not go through `__import__`, so `install()` also wraps
`importlib.import_module` with the same rule (the caller's module must be a pack's). Known limits: a
third-party library imported by a pack that itself imports `folder_paths` is not a pack module and gets
the real import system. ComfyUI internals this layer does not provide (`comfy.sd`, `comfy.ldm`, ...)
fail with a ModuleNotFoundError that says so, a missing name with an ImportError giving the layer's
reason, and the pack is reported as failed with it.

The engine never imports this package; plugins.manager installs it before loading packs.
"""

from __future__ import annotations

import builtins
import importlib
from typing import Any

from . import _runtime

ALIASES = {"folder_paths": "compat.folder_paths", "comfy": "compat.comfy", "server": "compat.server",
           "nodes": "compat.nodes", "comfy_api": "compat.comfy_api", "node_helpers": "compat.node_helpers",
           "latent_preview": "compat.latent_preview", "comfy_extras": "compat.comfy_extras",
           "comfy_execution": "compat.comfy_execution", "execution": "compat.execution"}
# Parts of ComfyUI itself that packs sometimes import and that this layer does not provide.
COMFY_INTERNALS = frozenset({"comfy_api_nodes", "comfyui_version", "comfy_config"})

_pack_roots: set[str] = set()
_real_import: Any = None


_pack_dirs: set[str] = set()


def register_pack_module(module_name: str, folder: Any = None) -> None:
    """Treat `module_name` (and its submodules) as pack code: its imports see the shim. With `folder`,
    every module loaded from a file inside it is pack code too (packs that put their own subfolders on
    sys.path and import them under other names)."""
    _pack_roots.add(module_name.partition(".")[0])
    if folder is not None:
        import os

        for path in {os.path.abspath(str(folder)), os.path.realpath(str(folder))}:
            _pack_dirs.add(path.rstrip(os.sep) + os.sep)


def is_pack_module(module_name: Any, file: Any = None) -> bool:
    if isinstance(module_name, str) and module_name.partition(".")[0] in _pack_roots:
        return True
    return isinstance(file, str) and any(file.startswith(d) for d in _pack_dirs)


PROVIDED = ("folder_paths, comfy.utils, comfy.model_management, comfy.samplers, comfy.sample, comfy.cli_args, "
            "server.PromptServer, nodes, node_helpers, latent_preview, comfy_api (V3), the comfy_extras modules "
            "of nodes Sumie has and comfy_execution's ExecutionBlocker")


def _not_provided(name: str) -> ModuleNotFoundError:
    exc = ModuleNotFoundError(
        f"No module named '{name}': it is part of ComfyUI, and Sumie's compatibility layer provides only "
        f"{PROVIDED}", name=name)
    exc.sumie_compat = True  # type: ignore[attr-defined]
    return exc


def _aliased(name: str, fromlist: Any) -> Any:
    top, _, rest = name.partition(".")
    target = ALIASES[top] + ("." + rest if rest else "")
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".") or exc.name.startswith(target)):
            raise _not_provided(name) from None
        raise
    if fromlist:
        for item in fromlist:
            if item == "*":
                continue
            try:
                getattr(module, item)
            except AttributeError as exc:
                try:
                    importlib.import_module(f"{target}.{item}")
                except ModuleNotFoundError:  # keep the layer's reason ("this engine has no X node", ...)
                    raise ImportError(f"cannot import name {item!r} from {name!r}: {exc}", name=name) from None
        return module
    return importlib.import_module(ALIASES[top])


def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and type(globals) is dict:
        top = name.partition(".")[0]
        if (top in ALIASES or top in COMFY_INTERNALS) and is_pack_module(globals.get("__name__"),
                                                                         globals.get("__file__")):
            if top in ALIASES:
                return _aliased(name, fromlist)
            try:
                return _real_import(name, globals, locals, fromlist, level)
            except ModuleNotFoundError as exc:
                if exc.name == top:
                    raise _not_provided(name) from None
                raise
    return _real_import(name, globals, locals, fromlist, level)


def _import_module(name: str, package: str | None = None) -> Any:
    """`importlib.import_module` as packs call it: ComfyUI names resolve to the shim for pack callers."""
    if not name.startswith(".") and name.partition(".")[0] in ALIASES:
        import sys

        caller = sys._getframe(1).f_globals
        if is_pack_module(caller.get("__name__"), caller.get("__file__")):
            _aliased(name, None)
            top, _, rest = name.partition(".")
            return importlib.import_module(ALIASES[top] + ("." + rest if rest else ""))
    return _real_import_module(name, package)


_real_import_module = importlib.import_module


def install(manager: Any = None) -> None:
    """Bind the shim to a plugin manager (folders, server hooks); wrap `__import__` and `import_module` (once)."""
    global _real_import
    if manager is not None:
        _runtime.bind(manager)
        from . import folder_paths, server

        folder_paths.refresh()
        table = server.PromptServer.instance.routes
        if not any(t is table for t in manager.route_tables):
            manager.route_tables.append(table)
    if builtins.__import__ is not _import:
        _real_import = builtins.__import__
        builtins.__import__ = _import
    if importlib.import_module is not _import_module:
        importlib.import_module = _import_module


def uninstall() -> None:
    """Restore the plain import system (tests)."""
    if builtins.__import__ is _import and _real_import is not None:
        builtins.__import__ = _real_import
    if importlib.import_module is _import_module:
        importlib.import_module = _real_import_module


__all__ = ["ALIASES", "install", "is_pack_module", "register_pack_module", "uninstall"]
