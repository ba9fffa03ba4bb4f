"""ComfyUI's V1 node protocol, adapted: a V1 class becomes a registered node with a `graph.NodeSchema`.

A V1 class declares itself with class attributes (`INPUT_TYPES()`, `RETURN_TYPES`, `RETURN_NAMES`,
`FUNCTION`, `CATEGORY`, `OUTPUT_NODE`, `INPUT_IS_LIST`, `OUTPUT_IS_LIST`) and optional hooks
(`IS_CHANGED`, `VALIDATE_INPUTS`, `check_lazy_status`). `adapt_v1` reads those once and builds a
`Node` subclass, so validation, caching, list mapping, laziness and expansion are the engine's own:

- `IS_CHANGED` becomes the `fingerprint` hook (its value joins the cache key; NaN: always re-run).
- `VALIDATE_INPUTS` becomes `validate_inputs`; as in ComfyUI, an input that VALIDATE_INPUTS takes by
  name skips the built-in check (range, combo list), since the node checks it itself.
- Combo lists are read again from `INPUT_TYPES()` when shown or checked (at most once a second), so a
  pack's file lists stay current like ComfyUI's.
- The function may return a tuple, `{"ui": ..., "result": ...}`, `{"result": ..., "expand": graph}`,
  or be `async def` (run on a per-thread event loop kept for plugin coroutines).

While a V1 function runs, `comfy_v1_runtime.current_context()` is its `NodeContext`: the
compatibility layer (compat/) reports `ProgressBar` updates and interrupt checks through it. Torch-free.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from graph.errors import SchemaError
from graph.limits import INT_MAX, INT_MIN
from graph.node import Node, NodeContext, NodeResult
from graph.schema import (
    HIDDEN_KINDS,
    BooleanInput,
    ComboInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    NodeSchema,
    OutputSpec,
    StringInput,
)

from .comfy_v1_runtime import DynamicPrompt, run_coroutine, running

FLOAT_LIMIT = 1e18
LIVE_CHOICES_SECONDS = 1.0  # how long one INPUT_TYPES() answer serves combo lists


class V1Error(SchemaError):
    """A V1 class whose declaration cannot be turned into a schema."""


# -- input specs ---------------------------------------------------------------------------------------
_variants: dict[tuple[type, bool, bool], type] = {}


def _relaxed_check(self: InputSpec) -> None:
    if not isinstance(self.name, str) or not self.name or any(ord(c) < 32 for c in self.name):
        raise SchemaError(f"input name {self.name!r} must be non-empty text")


def _unchecked_coerce(self: InputSpec, value: Any, limits: Any, choices: Any = None) -> Any:
    return value


def _variant(cls: type, *, relaxed: bool, unchecked: bool) -> type:
    """The spec class, or a subclass that allows any input name and/or leaves checking to the node."""
    if not relaxed and not unchecked:
        return cls
    key = (cls, relaxed, unchecked)
    found = _variants.get(key)
    if found is None:
        body: dict[str, Any] = {"__module__": __name__}
        if relaxed:
            body["check"] = _relaxed_check
        if unchecked:
            body["coerce"] = _unchecked_coerce
        found = _variants[key] = type(f"V1{cls.__name__}", (cls,), body)
    return found


def _as_int(value: Any, fallback: int) -> int:
    try:
        if isinstance(value, float) and not math.isfinite(value):
            return INT_MAX if value > 0 else INT_MIN
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return fallback


def _as_float(value: Any, fallback: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return fallback
    if math.isnan(number):
        return fallback
    return max(-FLOAT_LIMIT, min(FLOAT_LIMIT, number))


def _json_safe(opts: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for k, v in opts.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            continue
        safe[str(k)] = v
    return safe


class _LiveTypes:
    """INPUT_TYPES() answers, re-read at most once a second, for combo lists that change (files)."""

    def __init__(self, cls: type, first: Mapping[str, Any]) -> None:
        self.cls = cls
        self.value = first
        self.when = time.monotonic()
        self.lock = threading.Lock()

    def choices(self, section: str, name: str, fallback: list[Any]) -> list[Any]:
        with self.lock:
            if time.monotonic() - self.when > LIVE_CHOICES_SECONDS:
                self.when = time.monotonic()
                try:
                    value = self.cls.INPUT_TYPES()
                    if isinstance(value, Mapping):
                        self.value = value
                except Exception:  # keep the last good answer
                    pass
            value = self.value
        raw = (value.get(section) or {}).get(name) if isinstance(value.get(section), Mapping) else None
        found = _combo_list(raw)
        return fallback if found is None else found


def _combo_list(raw: Any) -> list[Any] | None:
    if not isinstance(raw, (list, tuple)) or not raw:
        return None
    kind = raw[0]
    if isinstance(kind, (list, tuple)):
        return list(kind)
    opts = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if kind == "COMBO" and isinstance(opts.get("options"), (list, tuple)):
        return list(opts["options"])
    return None


def _live_choices(live: _LiveTypes, section: str, name: str, snapshot: list[Any]) -> Callable[[Any], list[Any]]:
    def choices(folders: Any = None) -> list[Any]:
        return live.choices(section, name, snapshot)

    choices.__qualname__ = f"v1_choices({name!r})"
    return choices


def input_spec(name: str, raw: Any, *, optional: bool = False, section: str = "required",
               live: _LiveTypes | None = None, unchecked: bool = False) -> InputSpec:
    """One V1 input declaration, `(TYPE, {options})`, as one of our input specs."""
    if isinstance(raw, str):
        raw = (raw,)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise V1Error(f"input {name!r}: expected (TYPE,) or (TYPE, {{options}}), got {raw!r:.80}")
    kind = raw[0]
    opts = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    relaxed = not (isinstance(name, str) and name.isidentifier())
    tooltip = opts.pop("tooltip", None)
    common: dict[str, Any] = {"name": name, "optional": optional, "lazy": bool(opts.pop("lazy", False)),
                              "tooltip": tooltip if isinstance(tooltip, str) else None,
                              "force_input": bool(opts.pop("forceInput", False))}
    choices = _combo_list(raw)
    if choices is not None:
        opts.pop("options", None)
        default = opts.pop("default", None)
        if default not in choices:
            default = None
        spec_choices: Any = _live_choices(live, section, name, choices) if live is not None else choices
        cls = _variant(ComboInput, relaxed=relaxed, unchecked=unchecked)
        return cls(choices=spec_choices, default=default, extra=_json_safe(opts), **common)
    if not isinstance(kind, str):
        raise V1Error(f"input {name!r}: type must be a name or a list of choices, got {type(kind).__name__}")
    if kind == "INT":
        lo = max(INT_MIN, _as_int(opts.pop("min", INT_MIN), INT_MIN))
        hi = min(INT_MAX, _as_int(opts.pop("max", INT_MAX), INT_MAX))
        lo, hi = min(lo, hi), max(lo, hi)
        default = min(hi, max(lo, _as_int(opts.pop("default", 0), 0)))
        step = max(1, _as_int(opts.pop("step", 1), 1))
        display = opts.pop("display", None)
        cag = bool(opts.pop("control_after_generate", False))
        cls = _variant(IntInput, relaxed=relaxed, unchecked=unchecked)
        return cls(default=default, min=lo, max=hi, step=step, display=display if isinstance(display, str) else None,
                   control_after_generate=cag, extra=_json_safe(opts), **common)
    if kind == "FLOAT":
        lo = _as_float(opts.pop("min", -FLOAT_LIMIT), -FLOAT_LIMIT)
        hi = _as_float(opts.pop("max", FLOAT_LIMIT), FLOAT_LIMIT)
        lo, hi = min(lo, hi), max(lo, hi)
        default = min(hi, max(lo, _as_float(opts.pop("default", 0.0), 0.0)))
        step = _as_float(opts.pop("step", 0.1), 0.1)
        rounding = opts.pop("round", None)
        display = opts.pop("display", None)
        cls = _variant(FloatInput, relaxed=relaxed, unchecked=unchecked)
        return cls(default=default, min=lo, max=hi, step=step if step > 0 else 0.1,
                   round=rounding if isinstance(rounding, (bool, int, float)) else None,
                   display=display if isinstance(display, str) else None, extra=_json_safe(opts), **common)
    if kind == "STRING":
        default = opts.pop("default", "")
        placeholder = opts.pop("placeholder", None)
        cls = _variant(StringInput, relaxed=relaxed, unchecked=unchecked)
        return cls(default="" if default is None else str(default), multiline=bool(opts.pop("multiline", False)),
                   placeholder=placeholder if isinstance(placeholder, str) else None,
                   dynamic_prompts=bool(opts.pop("dynamicPrompts", False)), extra=_json_safe(opts), **common)
    if kind == "BOOLEAN":
        label_on, label_off = opts.pop("label_on", None), opts.pop("label_off", None)
        cls = _variant(BooleanInput, relaxed=relaxed, unchecked=unchecked)
        return cls(default=bool(opts.pop("default", False)), label_on=label_on if isinstance(label_on, str) else None,
                   label_off=label_off if isinstance(label_off, str) else None, extra=_json_safe(opts), **common)
    cls = _variant(InputSpec, relaxed=relaxed, unchecked=unchecked)
    return cls(type=kind, extra=_json_safe(opts), **common)


# -- calling V1 hooks ----------------------------------------------------------------------------------
def _params(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """The keyword names a function accepts, and whether it takes **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _fit(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep what `fn` accepts (all of it with **kwargs)."""
    names, any_kw = _params(fn)
    return kwargs if any_kw else {k: v for k, v in kwargs.items() if k in names}


def validation_verdict(verdict: Any, class_type: str, hook: str) -> bool | str:
    """A pack's validation answer as our `validate_inputs` gives it: True, or the message to show.

    False and None are refusals without a reason; anything else is the reason, as text.
    """
    if verdict is True:
        return True
    if verdict is False or verdict is None:
        return f"{class_type}: {hook} rejected the inputs"
    return str(verdict)


def _is_class_level(cls: type, attr: str) -> bool:
    return isinstance(inspect.getattr_static(cls, attr, None), (classmethod, staticmethod))


def refuse_blockers(values: Any, where: str) -> None:
    """ComfyUI's ExecutionBlocker as an output: the engine cannot block what depends on it, so say so."""
    for value in values if isinstance(values, (tuple, list)) else ():
        if type(value).__name__ == "ExecutionBlocker" and hasattr(value, "message"):
            said = f" ({value.message})" if value.message else ""
            raise RuntimeError(f"{where} returned an ExecutionBlocker{said}: Sumie cannot skip the nodes that "
                               "depend on this output; give the node an input that does not block")


def _to_result(raw: Any, where: str, n_out: int) -> tuple[Any, ...] | NodeResult:
    refuse_blockers(raw.result if isinstance(raw, NodeResult) else raw, where)
    if isinstance(raw, dict) and isinstance(raw.get("result"), (tuple, list)):
        refuse_blockers(raw["result"], where)
    if type(raw) is tuple or isinstance(raw, NodeResult):
        return raw
    if isinstance(raw, tuple):  # a namedtuple
        return tuple(raw)
    if isinstance(raw, list):
        return tuple(raw)
    if isinstance(raw, dict) and ("result" in raw or "ui" in raw or "expand" in raw):
        result = raw.get("result")
        if result is None:
            result = ()
        elif not isinstance(result, (tuple, list)):
            result = (result,)
        ui = raw.get("ui")
        return NodeResult(result=tuple(result), ui=dict(ui) if isinstance(ui, Mapping) else None,
                          expand=raw.get("expand"))
    if raw is None and n_out == 0:
        return ()
    raise TypeError(f"{where} returned {type(raw).__name__}; a V1 node function returns a tuple of its "
                    f"{n_out} output(s), or a dict with 'ui' and/or 'result' (and 'expand')")


# -- the adapter ---------------------------------------------------------------------------------------
def adapt_v1(class_type: str, v1_cls: type, *, display_name: str | None = None, pack: str = "",
             version: str = "1", python_module: str | None = None) -> type[Node]:
    """A `Node` subclass running `v1_cls` (a ComfyUI V1 node class); raises V1Error when it cannot."""
    where = f"{pack + ': ' if pack else ''}{class_type}"
    if not isinstance(v1_cls, type):
        raise V1Error(f"{where}: NODE_CLASS_MAPPINGS must map names to classes, got {type(v1_cls).__name__}")
    input_types_fn = getattr(v1_cls, "INPUT_TYPES", None)
    if not callable(input_types_fn):
        raise V1Error(f"{where}: {v1_cls.__name__} has no INPUT_TYPES() classmethod")
    try:
        declared = input_types_fn()
    except Exception as exc:
        raise V1Error(f"{where}: INPUT_TYPES() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, Mapping):
        raise V1Error(f"{where}: INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    function = getattr(v1_cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(v1_cls, function, None)):
        raise V1Error(f"{where}: FUNCTION must name a method of {v1_cls.__name__} (got {function!r})")

    validate_fn = getattr(v1_cls, "VALIDATE_INPUTS", None)
    unchecked: frozenset[str] = frozenset()
    if callable(validate_fn):
        names, any_kw = _params(validate_fn)
        unchecked = frozenset(["*"]) if any_kw else names

    live = _LiveTypes(v1_cls, declared)
    inputs: list[InputSpec] = []
    for section, optional in (("required", False), ("optional", True)):
        block = declared.get(section) or {}
        if not isinstance(block, Mapping):
            raise V1Error(f"{where}: INPUT_TYPES()[{section!r}] must be a dict")
        for name, raw in block.items():
            if any(s.name == name for s in inputs):
                continue  # declared in both sections: the first wins, as in ComfyUI
            try:
                inputs.append(input_spec(str(name), raw, optional=optional, section=section, live=live,
                                         unchecked="*" in unchecked or name in unchecked))
            except SchemaError as exc:
                raise V1Error(f"{where}: {exc}") from None
    input_names = {s.name for s in inputs}
    hidden: list[HiddenInput] = []
    extra_hidden: list[str] = []  # hidden kinds we do not provide (API keys and the like): passed as None
    dynprompt_names: list[str] = []
    hidden_block = declared.get("hidden") or {}
    if isinstance(hidden_block, Mapping):
        for name, kind in hidden_block.items():
            if name in input_names:
                continue
            if isinstance(kind, (list, tuple)) and kind:
                kind = kind[0]
            if isinstance(kind, str) and kind in HIDDEN_KINDS:
                hidden.append(HiddenInput(name=str(name), kind=kind))
                if kind == "DYNPROMPT":
                    dynprompt_names.append(str(name))
            else:
                extra_hidden.append(str(name))

    return_types = getattr(v1_cls, "RETURN_TYPES", ())
    if isinstance(return_types, str) or not isinstance(return_types, (list, tuple)):
        raise V1Error(f"{where}: RETURN_TYPES must be a tuple of type names, got {return_types!r:.80}")
    names = list(getattr(v1_cls, "RETURN_NAMES", None) or ())
    is_list = list(getattr(v1_cls, "OUTPUT_IS_LIST", None) or ())
    tooltips = list(getattr(v1_cls, "OUTPUT_TOOLTIPS", None) or ())
    outputs = []
    for i, rtype in enumerate(return_types):
        type_name = rtype if isinstance(rtype, str) else "COMBO"
        name = names[i] if i < len(names) and isinstance(names[i], str) else None
        tip = tooltips[i] if i < len(tooltips) and isinstance(tooltips[i], str) else None
        outputs.append(OutputSpec(type=type_name, name=name, is_list=bool(is_list[i]) if i < len(is_list) else False,
                                  tooltip=tip))
    category = getattr(v1_cls, "CATEGORY", "")
    description = getattr(v1_cls, "DESCRIPTION", "")
    schema = NodeSchema(
        node_type=class_type,
        display_name=display_name if isinstance(display_name, str) else None,
        category=category if isinstance(category, str) else "",
        description=description if isinstance(description, str) else "",
        inputs=inputs, hidden=hidden, outputs=outputs,
        output_node=bool(getattr(v1_cls, "OUTPUT_NODE", False)),
        input_is_list=bool(getattr(v1_cls, "INPUT_IS_LIST", False)),
        deprecated=bool(getattr(v1_cls, "DEPRECATED", False)),
        experimental=bool(getattr(v1_cls, "EXPERIMENTAL", False)),
        version=str(version),
        python_module=python_module or (f"custom_nodes.{pack}" if pack else "custom_nodes"),
    )
    n_out = len(outputs)
    as_list = schema.input_is_list
    types_of = {s.name: s.type for s in inputs}
    lazy_names = [s.name for s in inputs if s.lazy]

    def _wrap(value: Any) -> Any:
        return [value] if as_list else value

    def instance(self: Any) -> Any:
        if self._v1 is None:
            self._v1 = v1_cls()
        return self._v1

    def hook(self: Any, attr: str) -> Callable[..., Any]:
        return getattr(v1_cls, attr) if _is_class_level(v1_cls, attr) else getattr(instance(self), attr)

    def execute(self: Any, ctx: NodeContext, /, **kwargs: Any) -> Any:
        for name in extra_hidden:
            kwargs.setdefault(name, _wrap(None))
        for name in dynprompt_names:
            if name in kwargs:
                value = kwargs[name]
                kwargs[name] = [DynamicPrompt(value[0])] if as_list else DynamicPrompt(value)
        fn = getattr(instance(self), function)
        with running(ctx):
            raw = fn(**kwargs)
            if inspect.isawaitable(raw):
                raw = run_coroutine(raw)
        return _to_result(raw, f"{where}.{function}()", n_out)

    def __init__(self: Any) -> None:
        self._v1 = None

    body: dict[str, Any] = {
        "SCHEMA": schema, "V1_CLASS": v1_cls, "PACK": pack, "__init__": __init__, "execute": execute,
        "__module__": getattr(v1_cls, "__module__", __name__), "__doc__": f"V1 node {class_type} ({where})",
    }

    if callable(getattr(v1_cls, "IS_CHANGED", None)):
        def fingerprint(self: Any, /, **constants: Any) -> Any:
            constants.pop("folders", None)
            args = {k: _wrap(v) for k, v in constants.items()}
            for h in hidden:
                args.setdefault(h.name, _wrap(None))
            value = hook(self, "IS_CHANGED")(**_fit(v1_cls.IS_CHANGED, args))
            if inspect.isawaitable(value):
                value = run_coroutine(value)
            return value
        body["fingerprint"] = fingerprint

    if callable(validate_fn):
        def validate_inputs(self: Any, /, *, limits: Any = None, **constants: Any) -> Any:
            constants.pop("folders", None)
            args: dict[str, Any] = {k: _wrap(v) for k, v in constants.items()}
            wanted, _ = _params(validate_fn)
            if "input_types" in wanted:
                args["input_types"] = _wrap({k: t for k, t in types_of.items() if k not in constants})
            verdict = hook(self, "VALIDATE_INPUTS")(**_fit(validate_fn, args))
            if inspect.isawaitable(verdict):
                verdict = run_coroutine(verdict)
            if as_list and isinstance(verdict, list):
                bad = [v for v in verdict if v is not True]
                verdict = True if not bad else bad[0]
            return validation_verdict(verdict, class_type, "VALIDATE_INPUTS")
        body["validate_inputs"] = validate_inputs

    if lazy_names:
        def check_lazy_status(self: Any, /, **values: Any) -> list[str]:
            fn = getattr(v1_cls, "check_lazy_status", None)
            if not callable(fn):  # lazy inputs without a check: evaluate them all
                return list(lazy_names)
            for name in extra_hidden:
                values.setdefault(name, _wrap(None))
            bound = hook(self, "check_lazy_status")
            wanted = bound(**_fit(fn, values))
            if inspect.isawaitable(wanted):
                wanted = run_coroutine(wanted)
            if isinstance(wanted, str):
                wanted = [wanted]
            return [w for w in (wanted or []) if isinstance(w, str)]
        body["check_lazy_status"] = check_lazy_status

    return type(f"V1_{v1_cls.__name__}", (Node,), body)


__all__ = ["V1Error", "adapt_v1", "input_spec"]
