"""The node registry: an object built in main.py and passed down (no import-time global)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .errors import SchemaError
from .node import Node
from .schema import HIDDEN_KINDS, InputSpec, NodeSchema


@dataclass(frozen=True, kw_only=True)
class NodeDef:
    """A registered node class with the lookups validation and execution need precomputed."""

    cls: type
    schema: NodeSchema
    source: str
    inputs: Mapping[str, InputSpec]
    lazy: frozenset[str]
    output_types: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    has_fingerprint: bool
    has_validate: bool
    has_lazy_check: bool
    # Hooks that declare a `folders` parameter (or **kwargs) are given the engine's Folders.
    hooks_take_folders: frozenset[str] = frozenset()
    keyed_by_node_id: bool = False  # asks for UNIQUE_ID, so its results are per node id

    @property
    def class_type(self) -> str:
        return self.schema.node_type


@dataclass(frozen=True, kw_only=True)
class FailedPack:
    name: str
    error: str
    node_names: tuple[str, ...] = ()


@dataclass
class NodeRegistry:
    """All node classes the engine knows; `folders` feeds combo inputs that list files."""

    folders: Any = None
    _defs: dict[str, NodeDef] = field(default_factory=dict)
    failed_packs: list[FailedPack] = field(default_factory=list)

    def register(self, cls: type, *, source: str = "builtin") -> NodeDef:
        schema = getattr(cls, "SCHEMA", None)
        if not isinstance(schema, NodeSchema):
            raise SchemaError(f"{cls.__name__} has no SCHEMA (a graph.NodeSchema)")
        node_def = _build_def(cls, schema, source)
        existing = self._defs.get(schema.node_type)
        if existing is not None:
            raise SchemaError(
                f"node id {schema.node_type!r} from {source} is already registered by {existing.source}"
            )
        self._defs[schema.node_type] = node_def
        return node_def

    def register_all(self, classes: Iterable[type], *, source: str = "builtin") -> None:
        for cls in classes:
            self.register(cls, source=source)

    def register_module(self, module: ModuleType, *, source: str | None = None) -> None:
        """Register a module's `NODES` list (the convention every node module follows)."""
        nodes = getattr(module, "NODES", None)
        if nodes is None:
            raise SchemaError(f"module {module.__name__} has no NODES list")
        self.register_all(nodes, source=source or module.__name__)

    def record_failed_pack(self, name: str, error: str, node_names: Iterable[str] = ()) -> None:
        self.failed_packs.append(FailedPack(name=name, error=error, node_names=tuple(node_names)))

    def remove_source(self, source: str) -> list[str]:
        """Unregister every node registered from `source` (a plugin being reloaded); their ids."""
        gone = [name for name, d in self._defs.items() if d.source == source]
        for name in gone:
            del self._defs[name]
        return gone

    def get(self, class_type: str) -> NodeDef | None:
        return self._defs.get(class_type)

    def __getitem__(self, class_type: str) -> NodeDef:
        return self._defs[class_type]

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._defs

    def __len__(self) -> int:
        return len(self._defs)

    def names(self) -> list[str]:
        return list(self._defs)

    def missing_node_hint(self, class_type: str) -> str:
        """Why a class is unknown: a plugin that failed to import is the usual reason."""
        for pack in self.failed_packs:
            if class_type in pack.node_names or class_type.lower().startswith(pack.name.lower()):
                return f"The plugin '{pack.name}' that may provide it failed to load: {pack.error}"
        if self.failed_packs:
            names = ", ".join(p.name for p in self.failed_packs)
            return f"Is it from a plugin that is not installed? These plugins failed to load: {names}"
        return "Is it from a plugin (custom node pack) that is not installed?"

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        if class_type is not None:
            node_def = self._defs.get(class_type)
            return {class_type: node_def.schema.to_object_info(self.folders)} if node_def else {}
        return {name: d.schema.to_object_info(self.folders) for name, d in self._defs.items()}


def _build_def(cls: type, schema: NodeSchema, source: str) -> NodeDef:
    if not schema.node_type or not isinstance(schema.node_type, str):
        raise SchemaError(f"{cls.__name__}: node_type must be a non-empty string")
    where = f"node {schema.node_type!r}"
    names: dict[str, InputSpec] = {}
    for spec in schema.inputs:
        try:
            spec.check()
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}") from None
        if spec.name in names:
            raise SchemaError(f"{where}: input {spec.name!r} is declared twice")
        names[spec.name] = spec
    for hidden in schema.hidden:
        if hidden.kind not in HIDDEN_KINDS:
            raise SchemaError(f"{where}: hidden input {hidden.name!r} has unknown kind {hidden.kind!r}")
        if hidden.name in names:
            raise SchemaError(f"{where}: hidden input {hidden.name!r} clashes with an input")
    lazy = frozenset(s.name for s in schema.inputs if s.lazy)
    has_lazy_check = callable(getattr(cls, "check_lazy_status", None))
    if lazy and not has_lazy_check:
        raise SchemaError(f"{where}: declares lazy inputs but has no check_lazy_status()")
    _check_signature(cls, schema, where)
    return NodeDef(
        cls=cls,
        schema=schema,
        source=source,
        inputs=names,
        lazy=lazy,
        output_types=tuple(o.type for o in schema.outputs),
        output_is_list=tuple(o.is_list for o in schema.outputs),
        has_fingerprint=callable(getattr(cls, "fingerprint", None)),
        has_validate=callable(getattr(cls, "validate_inputs", None)),
        has_lazy_check=has_lazy_check,
        hooks_take_folders=frozenset(h for h in ("fingerprint", "validate_inputs") if _accepts(cls, h, "folders")),
        keyed_by_node_id=any(h.kind == "UNIQUE_ID" for h in schema.hidden),
    )


def _accepts(cls: type, method: str, name: str) -> bool:
    fn = getattr(cls, method, None)
    if not callable(fn):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _check_signature(cls: type, schema: NodeSchema, where: str) -> None:
    """The execute() signature must accept every declared input and require nothing undeclared."""
    execute = getattr(cls, "execute", None)
    if execute is None or execute is Node.execute:
        raise SchemaError(f"{where}: {cls.__name__} does not implement execute()")
    params = list(inspect.signature(execute).parameters.values())[1:]  # drop self
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the context argument
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    declared = {s.name for s in schema.inputs} | {h.name for h in schema.hidden}
    if not takes_kwargs:
        missing = sorted(declared - accepted)
        if missing:
            raise SchemaError(f"{where}: execute() does not accept declared inputs {missing}")
    optional = {s.name for s in schema.inputs if s.optional}
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.name not in declared and p.default is p.empty:
            raise SchemaError(f"{where}: execute() requires {p.name!r}, which is not a declared input")
        if p.name in optional and p.default is p.empty:
            raise SchemaError(f"{where}: optional input {p.name!r} needs a default value in execute()")
