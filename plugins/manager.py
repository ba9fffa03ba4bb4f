"""The plugin manager: loads packs (each import on its own thread, with a time limit), registers their
nodes, reports what happened, and reloads changed packs between prompts.

A pack is a folder in custom_nodes/ with an `__init__.py` (or a single `custom_nodes/name.py`). It
speaks one (or both) of two protocols:

- Ours (`SUMIE_API = 1`): the module exposes `SUMIE_API = 1` and a `NODES` list of `graph.Node`
  classes, exactly like a built-in node module; optionally `WEB_DIRECTORY`.
- ComfyUI's V1 protocol: `NODE_CLASS_MAPPINGS` (+ `NODE_DISPLAY_NAME_MAPPINGS`, `WEB_DIRECTORY`);
  each class is adapted by `plugins.comfy_v1.adapt_v1`.
- ComfyUI's V3 protocol: `async def comfy_entrypoint()` returns a `ComfyExtension` whose
  `get_node_list()` names `io.ComfyNode` classes (run on the import thread, within the time limit);
  each is adapted by `plugins.comfy_v3.adapt_v3`.

Nothing a pack does is fatal: a pack that fails to import (syntax error, missing dependency, an
exception, an import that does not finish within `import_timeout`) is logged, kept in the report
with its error, and recorded in the registry's `failed_packs` with the node names a quick scan of its
source finds, so a workflow using them is told which pack failed and why. A node that cannot be
registered, or whose name is taken (built-in names always win), is reported on its pack.

Packs are imported under their own module names (the folder name, or `sumie_pack_<name>` when that
name is taken). ComfyUI packs import `folder_paths`, `comfy.*`, `server`, `nodes`, `comfy_api`,
`node_helpers` and `latent_preview`; `compat` serves those names to pack modules only (see
compat/__init__.py), so it is installed before a pack is imported. Torch-free; the engine (graph/)
never imports plugins/ or compat/: main.py wires them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graph.errors import SchemaError
from graph.node import Node
from graph.registry import NodeRegistry
from graph.schema import NodeSchema

from .comfy_v1 import adapt_v1
from .comfy_v3 import adapt_v3, extension_nodes, is_v3_node
from .packs import FAILED, LOADED, SKIPPED, TIMED_OUT, PackReport, PackSource, discover, scan_node_names, signature

log = logging.getLogger("sumie.plugins")

SUMIE_API = 1  # the plugin API version this engine speaks (a pack sets SUMIE_API = 1)
SUPPORTED_APIS = frozenset({1})
SOURCE_PREFIX = "plugin:"
DEFAULT_IMPORT_TIMEOUT = 60.0
DEFAULT_SLOW_SECONDS = 5.0
_SAFE_MODULE = re.compile(r"[^0-9A-Za-z_]")


def _describe_import_error(exc: BaseException, pack: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and not getattr(exc, "sumie_compat", False):
        text += (f" (a missing dependency? see the pack's requirements.txt; `python main.py plugins check {pack}` "
                 "shows what installing it would change)")
    return text


_OWN_FRAMES = (str(Path(__file__).resolve()), str(Path(__file__).resolve().parents[1] / "compat"), "<frozen ")


def _pack_traceback(exc: BaseException, limit: int = 30) -> list[str]:
    """The traceback without the loader's and the import system's own frames."""
    lines = [line for line in traceback.format_exception(exc)
             if not (line.startswith('  File "') and any(own in line.split('"')[1] for own in _OWN_FRAMES))]
    return lines[-limit:]


def _owned_by(obj: Any, module_name: str) -> bool:
    owner = getattr(obj, "__module__", None) or ""
    return owner == module_name or owner.startswith(module_name + ".")



def _adapt_mapped(node_name: str, obj: Any, display_name: Any, **where: Any) -> type[Node]:
    """A NODE_CLASS_MAPPINGS entry as our node: ComfyUI accepts V3 classes there too."""
    if is_v3_node(obj):
        return adapt_v3(obj, node_id=node_name, **where)
    return adapt_v1(node_name, obj, display_name=display_name, **where)


def _adapted(report: PackReport, label: str, adapt: Callable[..., type[Node]], *args: Any,
             **kwargs: Any) -> type[Node] | None:
    """`adapt(*args, **kwargs)`, or None with the reason under `label` in the report: a declaration that
    cannot be adapted fails that node only, never the pack."""
    try:
        return adapt(*args, **kwargs)
    except SchemaError as exc:
        report.node_errors[label] = str(exc)
    except Exception as exc:  # a declaration no rule foresaw
        report.node_errors[label] = f"cannot be adapted: {type(exc).__name__}: {exc}"
    return None

class PluginManager:
    """Loads the packs of some folders into a registry and keeps the report; one per process."""

    def __init__(self, registry: NodeRegistry, dirs: Sequence[Path], *, allow: Sequence[str] | None = None,
                 enabled: bool = True, folders: Any = None, import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
                 slow_seconds: float = DEFAULT_SLOW_SECONDS, auto_reload: bool = False, compat: bool = True) -> None:
        self.registry = registry
        self.dirs = [Path(d) for d in dirs]
        self.allow = None if allow is None else frozenset(allow)
        self.enabled = enabled
        self.folders = folders if folders is not None else registry.folders
        self.import_timeout = import_timeout
        self.slow_seconds = slow_seconds
        self.auto_reload = auto_reload
        self.use_compat = compat
        self.compat_error: str | None = None
        self.reports: dict[str, PackReport] = {}
        self.web_dirs: dict[str, Path] = {}  # pack name -> its WEB_DIRECTORY (served at /extensions/<pack>/)
        self.route_tables: list[Any] = []  # aiohttp RouteTableDefs packs filled (PromptServer.routes)
        self.server: Any = None  # set by the server: send(event, data, sid), client_id(), prompt_id()
        self._modules: dict[str, str] = {}  # pack name -> module name
        self._lock = threading.RLock()
        self._last_check = 0.0

    # -- loading ---------------------------------------------------------------------------------
    def load_all(self) -> list[PackReport]:
        """Load every pack (once); failures are reported, never raised."""
        if not self.enabled:
            log.info("plugins disabled: custom_nodes/ is not loaded")
            return []
        with self._lock:
            for source in discover(self.dirs):
                if source.name in self.reports:
                    continue
                self._load(source)
            loaded = [r for r in self.reports.values() if r.status == LOADED]
            bad = [r for r in self.reports.values() if r.status in (FAILED, TIMED_OUT)]
            if self.reports:
                log.info("plugins: %d loaded, %d failed%s", len(loaded), len(bad),
                         "".join(f"\n  {r.name}: {r.error}" for r in bad))
            return list(self.reports.values())

    def _activate_compat(self) -> None:
        if not self.use_compat or self.compat_error is not None:
            return
        try:
            importlib.import_module("compat").install(self)
        except Exception as exc:  # packs then load without the shim; those that need it fail one by one
            self.compat_error = f"{type(exc).__name__}: {exc}"
            log.error("the ComfyUI compatibility layer is unavailable: %s", self.compat_error)

    def _module_name(self, source: PackSource) -> str:
        base = _SAFE_MODULE.sub("_", source.name) or "pack"
        if base[0].isdigit():
            base = f"_{base}"
        taken = {r.module for n, r in self.reports.items() if n != source.name and r.module}
        for candidate in (base, f"sumie_pack_{base}"):
            if candidate in taken:
                continue
            existing = sys.modules.get(candidate)
            if existing is not None and getattr(existing, "__sumie_pack__", None) is None:
                continue  # a real module (ours, the standard library's...) owns that name
            if existing is None and candidate == base:
                try:
                    if importlib.util.find_spec(candidate) is not None:
                        continue
                except (ImportError, ValueError):
                    continue
            return candidate
        n = 2
        while f"sumie_pack_{base}_{n}" in sys.modules or f"sumie_pack_{base}_{n}" in taken:
            n += 1
        return f"sumie_pack_{base}_{n}"

    def _load(self, source: PackSource) -> PackReport:
        report = PackReport(name=source.name, path=str(source.path), signature=signature(source))
        self.reports[source.name] = report
        if self.allow is not None and source.name not in self.allow:
            report.status = SKIPPED
            report.error = "not in the --plugins-allow list"
            return report
        self._activate_compat()
        module_name = self._module_name(source)
        report.module = module_name
        started = time.monotonic()
        box: dict[str, Any] = {}
        worker = threading.Thread(target=self._import, args=(source, module_name, box),
                                  name=f"sumie-import-{source.name}", daemon=True)
        worker.start()
        worker.join(self.import_timeout)
        report.import_seconds = time.monotonic() - started
        if worker.is_alive():
            report.status = TIMED_OUT
            report.error = (f"import did not finish within {self.import_timeout:g} s; it may still be running in "
                            "the background, but its nodes are not registered")
            self._failed(source, report)
            return report
        if report.import_seconds > self.slow_seconds:
            report.slow = True
            log.warning("plugin %s took %.1f s to import", source.name, report.import_seconds)
        exc = box.get("error")
        if exc is not None:
            report.status = FAILED
            report.error = _describe_import_error(exc, source.name)
            report.traceback = _pack_traceback(exc)
            self._failed(source, report)
            return report
        self._register(source, box["module"], report, v3_nodes=box.get("v3_nodes"), v3_error=box.get("v3_error"))
        return report

    def _import(self, source: PackSource, module_name: str, box: dict[str, Any]) -> None:
        self._purge(module_name)
        self._drop_routes(module_name)
        compat = sys.modules.get("compat") if self.use_compat else None
        if compat is not None:
            compat.register_pack_module(module_name, source.path if source.is_package else None)
        try:
            kwargs: dict[str, Any] = {}
            if source.is_package:
                kwargs["submodule_search_locations"] = [str(source.path)]
            spec = importlib.util.spec_from_file_location(module_name, source.init, **kwargs)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {source.init}")
            module = importlib.util.module_from_spec(spec)
            module.__sumie_pack__ = source.name  # type: ignore[attr-defined]
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            box["module"] = module
        except BaseException as exc:  # SystemExit from a pack is a failure too
            self._purge(module_name)
            box["error"] = exc
            return
        entrypoint = getattr(module, "comfy_entrypoint", None)
        if callable(entrypoint):  # a V3 pack: its extension names its nodes (within the import time limit)
            try:
                box["v3_nodes"] = extension_nodes(entrypoint)
            except BaseException as exc:
                box["v3_error"] = exc

    def _purge(self, module_name: str) -> None:
        root = sys.modules.get(module_name)
        if root is not None and getattr(root, "__sumie_pack__", None) is None:
            return  # never drop a module that is not a pack's
        for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
            sys.modules.pop(name, None)

    def _drop_routes(self, module_name: str) -> None:
        """Forget routes an earlier import of this module added (its handlers are stale)."""
        for table in self.route_tables:
            items = getattr(table, "_items", None)
            if isinstance(items, list):
                items[:] = [r for r in items if not _owned_by(getattr(r, "handler", None), module_name)]

    def _failed(self, source: PackSource, report: PackReport) -> None:
        report.likely_nodes = scan_node_names(source)
        log.error("plugin %s failed to load: %s", source.name, report.error)
        self.registry.record_failed_pack(source.name, report.error or "failed", report.likely_nodes)

    def _register(self, source: PackSource, module: Any, report: PackReport, *, v3_nodes: list[Any] | None = None,
                  v3_error: BaseException | None = None) -> None:
        name = source.name
        src = SOURCE_PREFIX + name
        version = f"{name}@{report.signature}"
        protocols: list[str] = []
        api = getattr(module, "SUMIE_API", None)
        nodes = getattr(module, "NODES", None)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if api is not None:
            report.api_version = api if isinstance(api, int) else None
            if api not in SUPPORTED_APIS:
                report.status = FAILED
                report.error = (f"the pack needs Sumie plugin API {api!r}; this Sumie speaks "
                                f"{', '.join(map(str, sorted(SUPPORTED_APIS)))}")
                self._failed(source, report)
                return
            protocols.append("sumie")
            if not isinstance(nodes, (list, tuple)):
                report.node_errors["NODES"] = "SUMIE_API is set but NODES is not a list of node classes"
                nodes = []
            for cls in nodes:
                self._add(cls, getattr(cls, "__name__", repr(cls)), report, src, ours=True)
        if isinstance(mappings, dict):
            protocols.append("comfy_v1")
            display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
            for node_name, v1_cls in mappings.items():
                if not isinstance(node_name, str) or not node_name:
                    report.node_errors[repr(node_name)[:60]] = "node names must be non-empty text"
                    continue
                shown = display.get(node_name) if isinstance(display, dict) else None
                cls = _adapted(report, node_name, _adapt_mapped, node_name, v1_cls, shown, pack=name,
                               version=version, python_module=f"custom_nodes.{name}")
                if cls is not None:
                    self._add(cls, node_name, report, src, ours=False)
        if v3_error is not None:
            report.status = FAILED
            report.error = f"comfy_entrypoint() failed: {type(v3_error).__name__}: {v3_error}"
            report.traceback = _pack_traceback(v3_error)
            self._failed(source, report)
            return
        if v3_nodes is not None:
            protocols.append("comfy_v3")
            for node_cls in v3_nodes:
                label = getattr(node_cls, "__name__", repr(node_cls))
                cls = _adapted(report, label, adapt_v3, node_cls, pack=name, version=version,
                               python_module=f"custom_nodes.{name}")
                if cls is not None:
                    self._add(cls, label, report, src, ours=False)
        web = getattr(module, "WEB_DIRECTORY", None)
        if isinstance(web, str) and web:
            base = source.path if source.is_package else source.path.parent
            web_path = (base / web).resolve()
            if not web_path.is_dir():
                report.node_errors["WEB_DIRECTORY"] = f"{web!r} is not a folder of the pack"
            elif not (web_path == base.resolve() or base.resolve() in web_path.parents):
                report.node_errors["WEB_DIRECTORY"] = f"{web!r} leads outside the pack; not served"
            else:
                report.web_directory = str(web_path)
                self.web_dirs[name] = web_path
        if not protocols and report.web_directory is None:
            report.status = FAILED
            report.error = ("the pack exports no nodes: set SUMIE_API = 1 and a NODES list (or, for a ComfyUI "
                            "pack, NODE_CLASS_MAPPINGS or `async def comfy_entrypoint()`)")
            self._failed(source, report)
            return
        report.protocol = "+".join(protocols) or "web"
        report.status = LOADED
        for node_name, why in report.node_errors.items():
            log.warning("plugin %s: %s: %s", name, node_name, why)
        for node_name, why in report.conflicts.items():
            log.warning("plugin %s: node %s not registered: %s", name, node_name, why)
        log.info("plugin %s: %d node(s) in %.2f s", name, len(report.nodes), report.import_seconds)

    def _add(self, cls: Any, label: str, report: PackReport, src: str, *, ours: bool) -> None:
        if ours and not (isinstance(cls, type) and issubclass(cls, Node)):
            report.node_errors[str(label)] = "NODES must hold graph.Node subclasses"
            return
        schema = getattr(cls, "SCHEMA", None)
        node_id = schema.node_type if isinstance(schema, NodeSchema) else str(label)
        existing = self.registry.get(node_id)
        if existing is not None:
            owner = existing.source
            if owner.startswith(SOURCE_PREFIX):
                keeper = owner[len(SOURCE_PREFIX):]
                report.conflicts[node_id] = f"already provided by the pack {keeper!r}, which keeps it"
            else:
                report.conflicts[node_id] = "a built-in node has this name; plugins cannot replace built-in nodes"
            return
        if ours and isinstance(schema, NodeSchema) and schema.python_module == "nodes":
            import dataclasses

            cls.SCHEMA = dataclasses.replace(schema, python_module=f"custom_nodes.{report.name}")
        try:
            self.registry.register(cls, source=src)
        except SchemaError as exc:
            report.node_errors[node_id] = str(exc)
            return
        report.nodes.append(node_id)

    # -- reloading ---------------------------------------------------------------------------------
    def reload_changed(self, *, min_interval: float = 1.0) -> list[str]:
        """Reload packs whose files changed, load new ones, drop removed ones; the names affected.

        Meant for development, between prompts: a prompt already running keeps the classes it started
        with. Routes a pack adds (PromptServer.routes) need a restart.
        """
        if not self.enabled:
            return []
        now = time.monotonic()
        if now - self._last_check < min_interval:
            return []
        with self._lock:
            self._last_check = now
            sources = {s.name: s for s in discover(self.dirs)}
            changed: list[str] = []
            for name in list(self.reports):
                if name not in sources:
                    self._unload(name)
                    del self.reports[name]
                    changed.append(name)
            for name, source in sources.items():
                report = self.reports.get(name)
                if report is not None and report.signature == signature(source):
                    continue
                if report is not None:
                    self._unload(name)
                    del self.reports[name]
                self._load(source)
                changed.append(name)
            if changed:
                log.info("plugins reloaded: %s", ", ".join(changed))
            return changed

    def _unload(self, name: str) -> None:
        self.registry.remove_source(SOURCE_PREFIX + name)
        self.web_dirs.pop(name, None)
        self.registry.failed_packs[:] = [p for p in self.registry.failed_packs if p.name != name]
        report = self.reports.get(name)
        if report is not None and report.module and report.status != TIMED_OUT:
            self._purge(report.module)

    # -- reporting ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        packs = [r.to_json() for r in sorted(self.reports.values(), key=lambda r: r.name)]
        return {"api_version": SUMIE_API, "enabled": self.enabled, "dirs": [str(d) for d in self.dirs],
                "allow": sorted(self.allow) if self.allow is not None else None, "reload": self.auto_reload,
                "compat_error": self.compat_error, "packs": packs}
