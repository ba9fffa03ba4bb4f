"""`nodes` for ComfyUI packs: `NODE_CLASS_MAPPINGS` of every registered node, and `MAX_RESOLUTION`.

Plugin V1 nodes appear as their original classes. Built-in nodes appear as V1-looking facades: a class
with `INPUT_TYPES()`, `RETURN_TYPES` and `FUNCTION` (ComfyUI's method name, else "execute_v1"), whose
method runs the node with the running node's context, so
`nodes.NODE_CLASS_MAPPINGS["ImageInvert"]().execute_v1(image=img)` works.
Positional arguments follow the node's input order. Module attributes resolve too (`nodes.SaveImage`).
Facades also answer to ComfyUI's method names (`nodes.KSampler().sample(...)`, `FUNCTION`) and class lists
(`ImageScale.upscale_methods`); `common_ksampler` is provided (see _node_functions.py).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from graph.limits import MAX_RESOLUTION

from . import _runtime
from ._node_functions import FUNCTIONS, POSITIONAL, choice_attributes, common_ksampler

_facades: dict[tuple[str, int], type] = {}


def _ctx_for(class_type: str) -> Any:
    ctx = _runtime.context()
    if ctx is not None:
        return ctx
    from graph.node import InterruptToken, NodeContext

    return NodeContext(node_id="compat", class_type=class_type, run_id="compat", interrupt=InterruptToken(),
                       folders=_runtime.folders())


def _facade(class_type: str, node_def: Any) -> type:
    key = (class_type, id(node_def))
    found = _facades.get(key)
    if found is not None:
        return found
    schema = node_def.schema
    order = list(POSITIONAL.get(class_type, [s.name for s in schema.inputs]))

    def INPUT_TYPES(cls: type) -> dict[str, Any]:  # noqa: N802 - the protocol's name
        registry = _runtime.registry()
        folders = registry.folders if registry is not None else None
        return schema.to_object_info(folders)["input"]

    def execute_v1(self: Any, *args: Any, **kwargs: Any) -> Any:
        for name, value in zip(order, args, strict=False):
            kwargs.setdefault(name, value)
        for spec in schema.inputs:  # ComfyUI's methods default their widgets (KSampler.sample's denoise=1.0)
            if spec.name not in kwargs and not spec.optional and spec.has_default():
                kwargs[spec.name] = spec.default_value()
        from graph.node import NodeResult

        result = node_def.cls().execute(_ctx_for(class_type), **kwargs)
        if isinstance(result, NodeResult):
            if result.ui is not None or result.expand is not None:
                out: dict[str, Any] = {"result": tuple(result.result)}
                if result.ui is not None:
                    out["ui"] = result.ui
                if result.expand is not None:
                    out["expand"] = result.expand
                return out
            return tuple(result.result)
        return result

    function = FUNCTIONS.get(class_type, "execute_v1")
    found = type(class_type if class_type.isidentifier() else "BuiltinNode", (), {
        **choice_attributes(schema), function: execute_v1,
        "INPUT_TYPES": classmethod(INPUT_TYPES), "RETURN_TYPES": tuple(o.type for o in schema.outputs),
        "RETURN_NAMES": tuple(o.display_name for o in schema.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_list for o in schema.outputs), "FUNCTION": function,
        "CATEGORY": schema.category, "OUTPUT_NODE": schema.output_node, "INPUT_IS_LIST": schema.input_is_list,
        "DESCRIPTION": schema.description, "execute_v1": execute_v1, "__module__": "nodes",
        "execute": classmethod(lambda cls, *args, **kwargs: execute_v1(cls(), *args, **kwargs)),  # V3-style calls
    })
    _facades[key] = found
    return found


class _Mappings(MutableMapping):
    """A live view of the registry; names packs add here are kept here (they are not registered)."""

    def __init__(self, display: bool = False) -> None:
        self.display = display
        self.added: dict[str, Any] = {}

    def _defs(self) -> dict[str, Any]:
        registry = _runtime.registry()
        if registry is None:
            return {}
        return {name: registry.get(name) for name in registry.names()}

    def __getitem__(self, name: str) -> Any:
        if name in self.added:
            return self.added[name]
        registry = _runtime.registry()
        node_def = registry.get(name) if registry is not None else None
        if node_def is None:
            raise KeyError(name)
        if self.display:
            return node_def.schema.display_name or name
        v1 = getattr(node_def.cls, "V1_CLASS", None) or getattr(node_def.cls, "V3_CLASS", None)
        return v1 if v1 is not None else _facade(name, node_def)

    def __setitem__(self, name: str, value: Any) -> None:
        self.added[name] = value

    def __delitem__(self, name: str) -> None:
        del self.added[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._defs()
        yield from (n for n in self.added if n not in self._defs())

    def __len__(self) -> int:
        return len(set(self._defs()) | set(self.added))


NODE_CLASS_MAPPINGS = _Mappings()
NODE_DISPLAY_NAME_MAPPINGS = _Mappings(display=True)
EXTENSION_WEB_DIRS: dict[str, str] = {}


def interrupt_processing(value: bool = True) -> None:
    """Interrupt the running job (what ComfyUI's nodes.interrupt_processing does)."""
    from .comfy.model_management import interrupt_current_processing

    interrupt_current_processing(value)


def __getattr__(name: str) -> Any:
    try:
        return NODE_CLASS_MAPPINGS[name]
    except KeyError:
        raise AttributeError(f"module 'nodes' has no attribute {name!r} (Sumie's compatibility layer)") from None


__all__ = ["MAX_RESOLUTION", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "common_ksampler",
           "interrupt_processing"]
