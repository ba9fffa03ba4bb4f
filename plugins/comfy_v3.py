"""ComfyUI's V3 node protocol, adapted: an `io.ComfyNode` class becomes a registered node with our schema.

A V3 node declares itself with classmethods: `define_schema()` returns an `io.Schema` (node id, `io.*.Input`
and `io.*.Output` declarations, hidden inputs, flags) and `execute(**inputs)` returns an `io.NodeOutput`
(plain or `async def`). `adapt_v3` reads the schema once and builds a `Node` subclass, so validation, cache
keys, list mapping, laziness, expansion and errors are the engine's own, exactly as for built-in nodes:

- each declaration becomes the input spec its V1 form (`(io_type, options)`) would (comfy_v1.input_spec);
  `MultiType` joins its types ("INT,FLOAT"); `MatchType` accepts its template's types;
- `Autogrow` becomes concrete inputs "<id>.<name>" (the first `min` required), passed to `execute` as
  one dict; `DynamicCombo` becomes the combo plus "<id>.<input>" for every option's inputs, passed as
  `{id: chosen_key, input: value, ...}` holding only the chosen option's inputs;
- `fingerprint_inputs` is the fingerprint hook (joins the cache key), `validate_inputs` the validation
  hook (inputs it takes by name skip the built-in range/choice check, as in ComfyUI), and
  `check_lazy_status` decides which lazy inputs are evaluated;
- hidden inputs (`io.Hidden.prompt`, `unique_id`, `extra_pnginfo`, `dynprompt`) reach the node as
  `cls.hidden`, on a per-call subclass so concurrent runs do not share them;
- `not_idempotent=True` keys the node's cache entry by its node id (two such nodes never share a result);
  `NodeOutput(block_execution=...)` fails the node with its message (the engine has no ExecutionBlocker).

The adapter reads declarations by duck typing (`get_io_type()`, `as_dict()`), so it needs only the
classes compat/comfy_api provides to packs. Torch-free.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from graph.errors import SchemaError
from graph.node import Node, NodeContext, NodeResult
from graph.schema import HIDDEN_KINDS, HiddenInput, InputSpec, NodeSchema, OutputSpec

from .comfy_v1 import _fit, _params, input_spec, refuse_blockers, validation_verdict
from .comfy_v1_runtime import DynamicPrompt, run_coroutine, running

AUTOGROW, DYNAMIC_COMBO, DYNAMIC_SLOT = "COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3", "COMFY_DYNAMICSLOT_V3"


class V3Error(SchemaError):
    """A V3 node class whose schema cannot be turned into ours."""


def is_v3_node(obj: Any) -> bool:
    """Whether `obj` is a V3 node class (an `io.ComfyNode` subclass, by its protocol methods)."""
    return isinstance(obj, type) and callable(getattr(obj, "define_schema", None)) and callable(
        getattr(obj, "execute", None)) and not callable(getattr(obj, "INPUT_TYPES", None))


def _overridden(cls: type, name: str) -> bool:
    """Whether the pack's class defines hook `name` (ComfyNode's own placeholders do not count)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return not (klass.__module__ or "").startswith("compat.comfy_api")
    return False


def _hidden_holder(values: Mapping[str, Any]) -> Any:
    module = importlib.import_module("compat.comfy_api.latest._io_node")
    return module.HiddenHolder(**values)


# -- reading the schema -----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Layout:
    specs: list[InputSpec] = dataclasses.field(default_factory=list)
    groups: dict[str, list[tuple[str, str]]] = dataclasses.field(default_factory=dict)  # Autogrow id -> (name, key)
    combos: dict[str, dict[str, list[tuple[str, str]]]] = dataclasses.field(default_factory=dict)

    def nest(self, values: dict[str, Any]) -> dict[str, Any]:
        """Flat engine inputs -> the arguments `execute` takes (dynamic inputs as dicts)."""
        out = dict(values)
        for gid, members in self.groups.items():
            out[gid] = {name: out.pop(key) for name, key in members if key in out}
        for cid, options in self.combos.items():
            chosen = out.get(cid)
            nested: dict[str, Any] = {cid: chosen}
            for name, full in options.get(chosen, []):
                if full in out:
                    nested[name] = out[full]
            for members in options.values():
                for _, full in members:
                    out.pop(full, None)
            out[cid] = nested
        return out


def _spec(decl: Any, name: str, *, optional: bool, unchecked: bool, where: str) -> InputSpec:
    try:
        io_type = decl.get_io_type()
        opts = dict(decl.as_dict())
    except Exception as exc:
        raise V3Error(f"{where}: input {name!r} could not be read: {type(exc).__name__}: {exc}") from None
    opts.pop("optional", None)
    override = getattr(decl, "input_override", None)
    multiselect = bool(opts.get("multiselect"))
    try:
        if override is not None:  # MultiType with a widget: the widget's spec, accepting every listed type
            base = input_spec(name, (override.get_io_type(), opts), optional=optional, unchecked=unchecked)
            return dataclasses.replace(base, type=io_type)
        return input_spec(name, (io_type, opts), optional=optional, unchecked=unchecked or multiselect)
    except SchemaError as exc:
        raise V3Error(f"{where}: {exc}") from None


def _layout(inputs: list[Any], unchecked: frozenset[str], where: str) -> _Layout:
    layout = _Layout()

    def add(decl: Any, name: str, optional: bool) -> None:
        layout.specs.append(_spec(decl, name, optional=optional, unchecked="*" in unchecked or name in unchecked,
                                  where=where))

    for decl in inputs:
        kind = decl.get_io_type() if callable(getattr(decl, "get_io_type", None)) else None
        if not isinstance(getattr(decl, "id", None), str) or not decl.id:
            raise V3Error(f"{where}: every input needs a text id, got {getattr(decl, 'id', None)!r}")
        if kind == AUTOGROW:
            template = decl.template
            members = []
            for i, one in enumerate(template.inputs()):
                key = f"{decl.id}.{one.id}"
                add(one, key, bool(decl.optional) or i >= template.min)
                members.append((one.id, key))
            layout.groups[decl.id] = members
        elif kind == DYNAMIC_COMBO:
            keys = [o.key for o in decl.options]
            opts = {k: v for k, v in decl.as_dict().items() if k not in ("optional", "options")}
            layout.specs.append(_spec(_Plain("COMBO", {**opts, "options": keys}), decl.id,
                                      optional=bool(decl.optional), unchecked=False, where=where))
            options: dict[str, list[tuple[str, str]]] = {}
            for option in decl.options:
                for sub in option.inputs:
                    key = f"{decl.id}.{sub.id}"
                    if not any(s.name == key for s in layout.specs):
                        add(sub, key, True)
                    options.setdefault(option.key, []).append((sub.id, key))
            layout.combos[decl.id] = options
        elif kind == DYNAMIC_SLOT:
            raise V3Error(f"{where}: input {decl.id!r}: DynamicSlot inputs are not supported by Sumie")
        else:
            add(decl, decl.id, bool(decl.optional))
    names = [s.name for s in layout.specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise V3Error(f"{where}: input ids must be unique, but {dupes} are not")
    return layout


class _Plain:
    """A declaration made here (the combo of a DynamicCombo)."""

    def __init__(self, io_type: str, opts: dict[str, Any]) -> None:
        self.io_type, self.opts = io_type, opts

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        return dict(self.opts)


def _read_schema(node_cls: type, where: str) -> Any:
    try:
        schema = node_cls.define_schema()
        for step in ("finalize", "validate"):
            if callable(getattr(schema, step, None)):
                getattr(schema, step)()
    except Exception as exc:
        raise V3Error(f"{where}: define_schema() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(schema, "node_id", None), str) or not schema.node_id:
        raise V3Error(f"{where}: define_schema() must return an io.Schema with a node_id")
    try:
        node_cls.SCHEMA = schema
    except (AttributeError, TypeError):
        pass
    return schema


# -- results ----------------------------------------------------------------------------------------------
def _to_result(raw: Any, where: str, enable_expand: bool) -> tuple[Any, ...] | NodeResult:
    ui = expand = None
    if raw is None:
        args: tuple[Any, ...] = ()
    elif hasattr(raw, "args") and hasattr(raw, "block_execution"):  # io.NodeOutput
        if raw.block_execution is not None:
            raise RuntimeError(f"{where}: the node blocked the rest of the run: {raw.block_execution} "
                               "(ExecutionBlocker is not supported by Sumie)")
        args, ui, expand = tuple(raw.args), raw.ui, raw.expand
    elif isinstance(raw, tuple):
        args = tuple(raw)
    elif isinstance(raw, dict):
        result = raw.get("result") or ()
        args = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        ui, expand = raw.get("ui"), raw.get("expand")
    else:
        raise TypeError(f"{where} returned {type(raw).__name__}; a V3 node returns io.NodeOutput(...)")
    refuse_blockers(args, where)
    if ui is not None and callable(getattr(ui, "as_dict", None)):
        ui = ui.as_dict()
    if ui is not None and not isinstance(ui, Mapping):
        raise TypeError(f"{where}: ui must be a ui.* output or a dict, got {type(ui).__name__}")
    if expand is not None and not enable_expand:
        raise RuntimeError(f"{where}: NodeOutput has expand= but the schema does not set enable_expand=True")
    if ui is None and expand is None:
        return args
    if ui is not None:  # ui helpers hold tuples ("text": (value,)); history and clients take lists
        ui = {k: list(v) if isinstance(v, tuple) else v for k, v in ui.items()}
    return NodeResult(result=args, ui=ui, expand=expand)


# -- the adapter ------------------------------------------------------------------------------------------
def adapt_v3(node_cls: type, *, node_id: str | None = None, pack: str = "", version: str = "1",
             python_module: str | None = None) -> type[Node]:
    """A `Node` subclass running the V3 node class `node_cls`; raises V3Error when it cannot."""
    label = node_id or getattr(node_cls, "__name__", "?")
    where = f"{pack + ': ' if pack else ''}{label}"
    if not is_v3_node(node_cls):
        raise V3Error(f"{where}: not a V3 node class (io.ComfyNode with define_schema() and execute())")
    v3 = _read_schema(node_cls, where)
    class_type = node_id or v3.node_id
    where = f"{pack + ': ' if pack else ''}{class_type}"

    validate_fn = getattr(node_cls, "validate_inputs", None) if _overridden(node_cls, "validate_inputs") else None
    unchecked: frozenset[str] = frozenset()
    if validate_fn is not None:
        names, any_kw = _params(validate_fn)
        unchecked = frozenset(["*"]) if any_kw else names
    layout = _layout(list(v3.inputs), unchecked, where)

    hidden: list[HiddenInput] = []
    for h in v3.hidden:
        kind = getattr(h, "value", h)
        name = getattr(h, "name", str(kind).lower())
        if kind in HIDDEN_KINDS:
            hidden.append(HiddenInput(name=name, kind=kind))
    if getattr(v3, "not_idempotent", False) and not any(h.kind == "UNIQUE_ID" for h in hidden):
        hidden.append(HiddenInput(name="unique_id", kind="UNIQUE_ID"))  # the engine then caches per node id
    outputs = [OutputSpec(type=o.get_io_type(), name=o.display_name, is_list=bool(o.is_output_list),
                          tooltip=o.tooltip if isinstance(o.tooltip, str) else None) for o in v3.outputs]
    schema = NodeSchema(
        node_type=class_type, display_name=v3.display_name if isinstance(v3.display_name, str) else None,
        category=v3.category if isinstance(v3.category, str) else "",
        description=v3.description if isinstance(v3.description, str) else "",
        inputs=layout.specs, hidden=hidden, outputs=outputs, output_node=bool(v3.is_output_node),
        input_is_list=bool(v3.is_input_list), deprecated=bool(v3.is_deprecated),
        experimental=bool(v3.is_experimental), version=str(version),
        python_module=python_module or (f"custom_nodes.{pack}" if pack else "custom_nodes"),
    )
    as_list = schema.input_is_list
    enable_expand = bool(getattr(v3, "enable_expand", False))
    lazy_names = [s.name for s in layout.specs if s.lazy]

    def split(values: dict[str, Any]) -> tuple[dict[str, Any], type]:
        """Hidden values out of the inputs, into a per-call subclass's `hidden`."""
        found: dict[str, Any] = {}
        for h in hidden:
            if h.name in values:
                value = values.pop(h.name)
                value = value[0] if as_list and isinstance(value, list) and value else value
                found[h.name] = DynamicPrompt(value) if h.kind == "DYNPROMPT" and value is not None else value
        runner = type(node_cls.__name__, (node_cls,), {"hidden": _hidden_holder(found),
                                                        "__module__": node_cls.__module__})
        return layout.nest(values), runner

    def call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        value = fn(**kwargs)
        return run_coroutine(value) if inspect.isawaitable(value) else value

    def execute(self: Any, ctx: NodeContext, /, **kwargs: Any) -> Any:
        args, runner = split(kwargs)
        with running(ctx):
            raw = call(runner.execute, args)
        return _to_result(raw, f"{where}.execute()", enable_expand)

    body: dict[str, Any] = {"SCHEMA": schema, "V3_CLASS": node_cls, "PACK": pack, "execute": execute,
                            "__module__": getattr(node_cls, "__module__", __name__),
                            "__doc__": f"V3 node {class_type} ({where})"}

    if _overridden(node_cls, "fingerprint_inputs"):
        def fingerprint(self: Any, /, **constants: Any) -> Any:
            constants.pop("folders", None)
            args, runner = split(constants)
            return call(runner.fingerprint_inputs, _fit(node_cls.fingerprint_inputs, args))
        body["fingerprint"] = fingerprint

    if validate_fn is not None:
        def validate_inputs(self: Any, /, *, limits: Any = None, **constants: Any) -> Any:
            constants.pop("folders", None)
            args, runner = split(constants)
            wanted, _ = _params(validate_fn)
            if "input_types" in wanted:
                args["input_types"] = {s.name: s.type for s in layout.specs if s.name not in constants}
            verdict = call(runner.validate_inputs, _fit(validate_fn, args))
            return validation_verdict(verdict, class_type, "validate_inputs")
        body["validate_inputs"] = validate_inputs

    if lazy_names:
        def check_lazy_status(self: Any, /, **values: Any) -> list[str]:
            args, runner = split(values)
            wanted = call(runner.check_lazy_status, _fit(node_cls.check_lazy_status, args))
            if isinstance(wanted, str):
                wanted = [wanted]
            return [w for w in (wanted or []) if isinstance(w, str)]
        body["check_lazy_status"] = check_lazy_status

    return type(f"V3_{node_cls.__name__}", (Node,), body)


def extension_nodes(entrypoint: Callable[[], Any]) -> list[Any]:
    """Run a pack's `comfy_entrypoint()`, the extension's `on_load()` and `get_node_list()`: its node classes."""
    extension = entrypoint()
    if inspect.isawaitable(extension):
        extension = run_coroutine(extension)
    if extension is None or not callable(getattr(extension, "get_node_list", None)):
        raise TypeError(f"comfy_entrypoint() must return a ComfyExtension, got {type(extension).__name__}")
    on_load = getattr(extension, "on_load", None)
    if callable(on_load):
        loaded = on_load()
        if inspect.isawaitable(loaded):
            run_coroutine(loaded)
    nodes = extension.get_node_list()
    if inspect.isawaitable(nodes):
        nodes = run_coroutine(nodes)
    if not isinstance(nodes, (list, tuple)):
        raise TypeError(f"get_node_list() must return a list of node classes, got {type(nodes).__name__}")
    return list(nodes)


__all__ = ["V3Error", "adapt_v3", "extension_nodes", "is_v3_node"]
