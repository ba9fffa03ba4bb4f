"""The executor: runs a validated workflow through the planner, with caching, events and interrupts.

Every output slot holds a list (list mapping: a node is called once per element unless it takes
whole lists). Values live in a per-run store keyed by cache key and are released when their last
consumer in the run has finished; the cache policy decides what outlives the run.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bounds import check_produced
from .cache import CacheEntry, CachePolicy, Key, NoCache, is_uncacheable, node_key
from .errors import MISSING, Interrupted, preview_value
from .events import (
    EventBus,
    Listener,
    NodeFailed,
    NodeFailure,
    NodeFinished,
    NodesCached,
    NodeStarted,
    Progress,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from .limits import Limits
from .node import Folders, InterruptToken, NodeContext, NodeResult
from .planner import Planner, PlanningError
from .registry import NodeDef, NodeRegistry
from .validate import ValidationResult, topological_order, validate_workflow
from .workflow import BadLink, Link, NodeInstance, Workflow, parse_api_workflow

log = logging.getLogger("sumie.executor")


@dataclass(kw_only=True)
class RunOutcome:
    run_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> ui
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failure: NodeFailure | None = None
    interrupted_at: str | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class RunRequest:
    """One prompt to run: a validated workflow plus what its hidden inputs and context need."""

    validation: ValidationResult
    run_id: str
    extra_data: Mapping[str, Any] = field(default_factory=dict)
    interrupt: InterruptToken = field(default_factory=InterruptToken)
    listeners: Sequence[Listener] = ()


class Executor:
    """Long-lived: holds the registry, the cache policy and the services nodes may use."""

    def __init__(
        self,
        registry: NodeRegistry,
        *,
        cache: CachePolicy | None = None,
        folders: Folders | None = None,
        services: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.registry = registry
        self.cache: CachePolicy = cache if cache is not None else NoCache()
        self.folders = folders
        self.services = dict(services or {})
        self.limits = limits or Limits()
        self.listeners = list(listeners)

    def validate(self, workflow: Workflow, targets: Sequence[str] | None = None) -> ValidationResult:
        return validate_workflow(workflow, self.registry, targets=targets, limits=self.limits)

    def run(self, request: RunRequest) -> RunOutcome:
        if not request.validation.ok:
            raise ValueError("cannot run a workflow that failed validation")
        return _Run(self, request).execute()


def describe_value(value: Any) -> Any:
    """A short, JSON-safe summary of an input for error reports (tensors by shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={list(shape)}, dtype={value.dtype})"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{type(value).__name__} of {len(value)} items"
    if isinstance(value, dict):
        return {str(k): describe_value(v) for k, v in list(value.items())[:8]}
    return preview_value(value, 120)


class _Run:
    """The state of one run; discarded afterwards."""

    def __init__(self, executor: Executor, request: RunRequest) -> None:
        self.executor = executor
        self.request = request
        self.run_id = request.run_id
        self.bus = EventBus([*executor.listeners, *request.listeners])
        workflow = request.validation.workflow
        self.raw = workflow.raw
        self.nodes: dict[str, NodeInstance] = dict(workflow.nodes)
        self.defs: dict[str, NodeDef] = {}
        self.keys: dict[str, Key] = {}
        self.store: dict[Key, CacheEntry] = {}
        self.remaining: dict[Key, int] = {}
        self.strong_deps: dict[str, list[str]] = {}
        self.expansions: dict[str, list[Any]] = {}
        self.executed: list[str] = []
        self.outputs: dict[str, dict[str, Any]] = {}
        self._instances: dict[str, Any] = {}
        self.output_set = frozenset(request.validation.outputs)
        get_def = executor.registry.__getitem__
        for nid in request.validation.order:
            self._index_node(self.nodes[nid], get_def(self.nodes[nid].class_type))

    # -- setup ---------------------------------------------------------------------------------
    def _index_node(self, node: NodeInstance, node_def: NodeDef) -> None:
        nid = node.id
        self.defs[nid] = node_def
        key = node_key(node, node_def, self.keys, self._fingerprint)
        self.keys[nid] = key
        lazy = node_def.lazy
        deps: list[str] = []
        for name, v in node.inputs.items():
            if type(v) is Link and name in node_def.inputs:
                src_key = self.keys[v.node_id]
                self.remaining[src_key] = self.remaining.get(src_key, 0) + 1
                if name not in lazy:
                    deps.append(v.node_id)
        self.strong_deps[nid] = deps

    def _fingerprint(self, node: NodeInstance, node_def: NodeDef) -> Any:
        """The node's fingerprint hook, given its constant inputs; a failing hook means "never cached"."""
        constants = {k: v for k, v in node.inputs.items() if type(v) is not Link and k in node_def.inputs}
        if "fingerprint" in node_def.hooks_take_folders:
            constants["folders"] = self.executor.folders
        try:
            return self._instance(node.id, node_def).fingerprint(**constants)
        except Exception as exc:
            log.warning("node %s (%s): fingerprint() failed, so it is not cached: %s: %s", node.id,
                        node.class_type, type(exc).__name__, exc)
            return float("nan")

    def _instance(self, nid: str, node_def: NodeDef) -> Any:
        obj = self._instances.get(nid)
        if obj is None:
            obj = self._instances[nid] = node_def.cls()
        return obj

    def _lookup(self, nid: str) -> bool:
        """Planner callback: is this node's result already available (this run or the cache)?"""
        key = self.keys[nid]
        if key in self.store:
            return True
        entry = self.executor.cache.get(key)
        if entry is None:
            return False
        self.store[key] = entry  # pinned for this run, whatever the policy evicts meanwhile
        return True

    # -- the loop ------------------------------------------------------------------------------
    def execute(self) -> RunOutcome:
        bus = self.bus
        bus.emit(RunStarted(run_id=self.run_id, timestamp=time.time()))
        outputs = self.request.validation.outputs
        planner = Planner(self.strong_deps.__getitem__, outputs, is_cached=self._lookup)
        self.planner = planner
        cached = planner.cached
        # Report every node of the prompt whose result is available, not only those the plan reached
        # (ancestors of a cached node are never visited), as editors mark each of them.
        reached = set(cached)
        store, cache, keys = self.store, self.executor.cache, self.keys
        self.cached_all = [nid for nid in self.request.validation.order
                           if nid in reached or keys[nid] in store or cache.get(keys[nid]) is not None]
        if self.cached_all:
            bus.emit(NodesCached(run_id=self.run_id, node_ids=list(self.cached_all)))
            for nid in cached:
                entry = self.store[self.keys[nid]]
                if entry.ui is not None:
                    self.outputs[nid] = entry.ui
                self._emit_finished(nid, entry.ui, cached=True)
                self._consumed(nid)
        interrupt = self.request.interrupt
        nid: str | None = None
        try:
            while True:
                nid = planner.next()
                if nid is None:
                    break
                interrupt.check()
                self._step(nid)
            if not planner.done:
                raise PlanningError(f"nothing left to run but nodes {planner.unfinished()[:10]} never became ready")
        except Interrupted as exc:
            node = self.nodes.get(nid) if nid else None
            bus.emit(RunInterrupted(run_id=self.run_id, node_id=nid, node_type=node.class_type if node else None,
                                    executed=list(self.executed), reason=exc.reason))
            return self._finish("interrupted", interrupted_at=nid, reason=exc.reason)
        except _NodeFailed as exc:
            bus.emit(NodeFailed(run_id=self.run_id, failure=exc.failure))
            return self._finish("error", failure=exc.failure)
        return self._finish("success")

    def _finish(self, status: str, **kw: Any) -> RunOutcome:
        # Everything in this prompt counts as used, cached ancestors of cached nodes included, so a
        # policy keeping "the last N prompts" keeps what the next small change will need.
        self.executor.cache.end_run(self.keys.values())
        self.bus.emit(RunFinished(run_id=self.run_id, status=status, timestamp=time.time(), outputs=self.outputs))
        return RunOutcome(run_id=self.run_id, status=status, outputs=self.outputs, executed=self.executed,
                          cached=list(self.cached_all), **kw)

    def _emit_finished(self, nid: str, ui: dict[str, Any] | None, *, cached: bool) -> None:
        node = self.nodes[nid]
        self.bus.emit(NodeFinished(run_id=self.run_id, node_id=nid, class_type=node.class_type,
                                   display_node=nid, ui=ui, cached=cached))

    def _step(self, nid: str) -> None:
        node = self.nodes[nid]
        node_def = self.defs[nid]
        if nid in self.expansions:
            self._complete(nid, CacheEntry(outputs=tuple(self._resolve(r) for r in self.expansions.pop(nid)),
                                           ui=None))
            return
        entry = self.store.get(self.keys[nid])
        if entry is not None:  # an identical node (same key) already ran in this prompt
            self.planner.cached.append(nid)
            self._complete(nid, entry, cached=True)
            return
        if node_def.lazy and self._needs_lazy(nid, node, node_def):
            return
        self.bus.emit(NodeStarted(run_id=self.run_id, node_id=nid, class_type=node.class_type, display_node=nid))
        kwargs: dict[str, Any] = {}
        try:
            kwargs = self._gather(node, node_def)
            entry = self._call(nid, node, node_def, kwargs)
        except Interrupted:
            raise
        except _NodeFailed:
            raise
        except Exception as exc:
            raise _NodeFailed(self._failure(nid, node, exc, kwargs)) from exc
        if entry is None:
            return  # expanded: the node waits for its sub-graph
        self.executed.append(nid)
        self._complete(nid, entry)

    def _complete(self, nid: str, entry: CacheEntry, *, cached: bool = False) -> None:
        key = self.keys[nid]
        if not cached:
            self.store[key] = entry
            if not is_uncacheable(key):
                self.executor.cache.put(key, entry)
        if entry.ui is not None:
            self.outputs[nid] = entry.ui
        self._emit_finished(nid, entry.ui, cached=cached)
        self.planner.complete(nid)
        self._consumed(nid)

    def _consumed(self, nid: str) -> None:
        """This node has read its inputs: release any value whose last consumer it was."""
        remaining = self.remaining
        store = self.store
        keys = self.keys
        outputs = self.output_set
        for name, v in self.nodes[nid].inputs.items():
            if type(v) is Link and name in self.defs[nid].inputs:
                src_key = keys[v.node_id]
                left = remaining.get(src_key, 0) - 1
                if left <= 0:
                    remaining.pop(src_key, None)
                    if v.node_id not in outputs:
                        store.pop(src_key, None)
                else:
                    remaining[src_key] = left

    # -- inputs --------------------------------------------------------------------------------
    def _values(self, link: Link) -> list[Any]:
        return self.store[self.keys[link.node_id]].outputs[link.output_index]

    def _gather(self, node: NodeInstance, node_def: NodeDef) -> dict[str, list[Any]]:
        """Every input as a list of values (constants are one-element lists)."""
        out: dict[str, list[Any]] = {}
        inputs = node.inputs
        for name in node_def.inputs:
            v = inputs.get(name, MISSING)
            if v is MISSING:
                continue
            if type(v) is Link:
                if name in node_def.lazy and not self.planner.is_done(v.node_id):
                    out[name] = [None]
                else:
                    out[name] = self._values(v)
            else:
                out[name] = [v]
        for hidden in node_def.schema.hidden:
            out[hidden.name] = [self._hidden(hidden.kind, node)]
        return out

    def _hidden(self, kind: str, node: NodeInstance) -> Any:
        if kind == "PROMPT":
            return self.raw
        if kind == "EXTRA_PNGINFO":
            return self.request.extra_data.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node.id
        return self.nodes  # DYNPROMPT: the live graph, expansions included

    def _needs_lazy(self, nid: str, node: NodeInstance, node_def: NodeDef) -> bool:
        """Ask the node which lazy inputs it needs; schedule the ones not evaluated yet."""
        values = self._gather(node, node_def)
        first = {k: (v if node_def.schema.input_is_list else (v[0] if v else None)) for k, v in values.items()}
        wanted = self._instance(nid, node_def).check_lazy_status(**first) or []
        pending = []
        for name in wanted:
            v = node.inputs.get(name)
            if name in node_def.lazy and type(v) is Link and not self.planner.is_done(v.node_id):
                pending.append(v.node_id)
        if pending:
            self.planner.require(nid, pending)
            return True
        return False

    # -- calling the node ----------------------------------------------------------------------
    def _call(self, nid: str, node: NodeInstance, node_def: NodeDef, lists: dict[str, list[Any]]) -> CacheEntry | None:
        obj = self._instance(nid, node_def)
        ctx = NodeContext(node_id=nid, class_type=node.class_type, run_id=self.run_id, interrupt=self.request.interrupt,
                          folders=self.executor.folders, services=self.executor.services, limits=self.executor.limits,
                          _progress=self._progress_fn(nid))
        schema = node_def.schema
        n_out = len(node_def.output_types)
        if schema.input_is_list:
            calls = [lists]
        else:
            lengths = [len(v) for v in lists.values()]
            if all(n == 1 for n in lengths):
                calls = [{k: v[0] for k, v in lists.items()}]
            elif lengths and min(lengths) == 0:
                calls = []  # an empty list input: nothing to map over
            else:
                count = max(lengths)
                calls = [{k: v[i] if i < len(v) else v[-1] for k, v in lists.items()} for i in range(count)]
        out: tuple[list[Any], ...] = tuple([] for _ in range(n_out))
        ui: dict[str, Any] | None = None
        for kwargs in calls:
            result, call_ui, expand = _normalise(obj.execute(ctx, **kwargs))
            if expand is not None:
                if len(calls) != 1:
                    raise ValueError("node expansion is only supported for a single call (no list mapping)")
                self._expand(nid, expand, result)
                return None
            if len(result) != n_out:
                raise ValueError(f"{node.class_type}.execute returned {len(result)} value(s) but the node declares "
                                 f"{n_out} output(s)")
            for j, value in enumerate(result):
                if node_def.output_is_list[j]:
                    out[j].extend(value)
                else:
                    out[j].append(value)
            if call_ui is not None:
                if ui is None:
                    ui = {}
                for k, v in call_ui.items():
                    if isinstance(v, list):
                        ui.setdefault(k, []).extend(v)
                    else:
                        ui.setdefault(k, []).append(v)
        limits = self.executor.limits
        check_produced(out, ui, max_string_length=limits.max_string_length, max_ui_chars=limits.max_ui_chars)
        return CacheEntry(outputs=out, ui=ui)

    def _progress_fn(self, nid: str):
        bus = self.bus
        run_id = self.run_id

        def report(value: float, total: float, preview: Any) -> None:
            bus.emit(Progress(run_id=run_id, node_id=nid, value=value, max=total, preview=preview))

        return report

    def _failure(self, nid: str, node: NodeInstance, exc: BaseException, inputs: dict[str, list[Any]]) -> NodeFailure:
        summary = {k: [describe_value(x) for x in v[:3]] for k, v in inputs.items()
                   if k not in ("prompt", "extra_pnginfo")}
        return NodeFailure(node_id=nid, node_type=node.class_type, exception_message=str(exc),
                           exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                           traceback=traceback.format_exception(exc), current_inputs=summary,
                           executed=list(self.executed))

    # -- expansion -----------------------------------------------------------------------------
    def _expand(self, nid: str, graph: Mapping[str, Any], result: tuple[Any, ...]) -> None:
        """Splice a node's returned sub-graph into this run; the node then waits for it."""
        n_out = len(self.defs[nid].output_types)
        if len(result) != n_out:
            raise ValueError(f"expansion result has {len(result)} value(s), node declares {n_out} output(s)")
        prefix = f"{nid}."
        sub = parse_api_workflow({f"{prefix}{k}": v for k, v in graph.items()})
        if sub.parse_issues:
            first = next(iter(sub.parse_issues.values()))[0]
            raise ValueError(f"expanded graph is invalid: {first.message}")
        renamed = {}
        for sid, snode in sub.nodes.items():
            inputs = {}
            for name, v in snode.inputs.items():
                if type(v) is Link:
                    target = f"{prefix}{v.node_id}"
                    if target in sub.nodes:
                        v = Link(target, v.output_index)
                    elif v.node_id not in self.nodes:
                        raise ValueError(f"expanded node {sid} links to unknown node {v.node_id}")
                elif type(v) is BadLink:
                    raise ValueError(f"expanded node {sid}, input '{name}': {v.reason}")
                inputs[name] = v
            renamed[sid] = NodeInstance(id=sid, class_type=snode.class_type, inputs=inputs, title=snode.title)
        for sid, snode in renamed.items():
            node_def = self.executor.registry.get(snode.class_type)
            if node_def is None:
                raise ValueError(f"expanded node {sid} has unknown type {snode.class_type!r}")
            missing = [s.name for s in node_def.inputs.values() if not s.optional and s.name not in snode.inputs]
            if missing:
                raise ValueError(f"expanded node {sid} ({snode.class_type}) lacks required inputs {missing}")
        order, stuck = topological_order(renamed, dict.fromkeys(renamed))
        if stuck:
            raise ValueError(f"expanded graph has a dependency cycle through {sorted(stuck)[:10]}")
        for sid in order:
            snode = renamed[sid]
            self.nodes[sid] = snode
            self._index_node(snode, self.executor.registry[snode.class_type])
        resolved: list[Any] = []
        deps: list[str] = []
        for item in result:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int):
                target = f"{prefix}{item[0]}" if f"{prefix}{item[0]}" in renamed else item[0]
                link = Link(target, item[1])
                resolved.append(link)
                deps.append(target)
                key = self.keys[target]
                self.remaining[key] = self.remaining.get(key, 0) + 1
            else:
                resolved.append(item)
        self.expansions[nid] = resolved
        self.planner.require(nid, deps)

    def _resolve(self, item: Any) -> list[Any]:
        if type(item) is Link:
            values = self._values(item)
            key = self.keys[item.node_id]
            left = self.remaining.get(key, 0) - 1
            if left <= 0:
                self.remaining.pop(key, None)
            else:
                self.remaining[key] = left
            return list(values)
        return [item]


class _NodeFailed(Exception):
    def __init__(self, failure: NodeFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def _normalise(raw: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None, dict[str, Any] | None]:
    if type(raw) is tuple:
        return raw, None, None
    if isinstance(raw, NodeResult):
        return tuple(raw.result), raw.ui, raw.expand
    if isinstance(raw, dict) and raw.keys() <= {"ui", "result", "expand"}:
        return tuple(raw.get("result") or ()), raw.get("ui"), raw.get("expand")
    if isinstance(raw, list):
        return tuple(raw), None, None
    if raw is None:
        return (), None, None
    raise TypeError(f"execute() must return a tuple or NodeResult, got {type(raw).__name__}")
