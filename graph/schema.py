"""Declarative, typed node schemas.

An input spec knows how to check a constant typed into the workflow (`coerce`) and how to describe
itself in `/object_info` (`to_object_info`). A `NodeSchema` is pure data; `NodeRegistry` checks it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import types as t
from .errors import InputError, SchemaError
from .limits import INT_MAX, INT_MIN, Limits

_INT_TEXT = re.compile(r"[+-]?\d{1,40}")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """A socket input: only a link can feed it (MODEL, LATENT, IMAGE, any plugin type)."""

    name: str
    type: str
    optional: bool = False
    lazy: bool = False
    tooltip: str | None = None
    force_input: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    is_widget: ClassVar[bool] = False

    def coerce(self, value: Any, limits: Limits) -> Any:
        if self.type == t.ANY:
            return value
        raise InputError(
            "invalid_input_type",
            f"Input '{self.name}' expects a link from a node that outputs {self.type}, not a typed-in value",
        )

    def has_default(self) -> bool:
        return False

    def default_value(self) -> Any:
        return None

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.lazy:
            opts["lazy"] = True
        if self.force_input:
            opts["forceInput"] = True
        opts.update(self.extra)
        return opts

    def to_object_info(self, folders: Any = None) -> list[Any]:
        opts = self.options()
        return [self.type, opts] if opts else [self.type]

    def check(self) -> None:
        """Raise SchemaError when the declaration contradicts itself."""
        if not self.name or not self.name.isidentifier():
            raise SchemaError(f"input name {self.name!r} must be a Python identifier")


@dataclass(frozen=True, kw_only=True)
class IntInput(InputSpec):
    type: str = t.INT
    default: int = 0
    min: int = INT_MIN
    max: int = INT_MAX
    step: int = 1
    control_after_generate: bool = False
    display: str | None = None

    is_widget: ClassVar[bool] = True

    def has_default(self) -> bool:
        return True

    def default_value(self) -> Any:
        return self.default

    def coerce(self, value: Any, limits: Limits) -> int:
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"Input '{self.name}' expects an integer, got a boolean")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value.strip())
        if not isinstance(value, int):
            raise InputError(
                "invalid_input_type", f"Input '{self.name}' expects an integer, got {type(value).__name__}"
            )
        if value < self.min:
            raise InputError(
                "value_smaller_than_min", f"Value {_short(value)} is smaller than min of {self.min}", min=self.min
            )
        if value > self.max:
            raise InputError(
                "value_bigger_than_max", f"Value {_short(value)} is bigger than max of {self.max}", max=self.max
            )
        return value

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "min": self.min, "max": self.max, "step": self.step}
        if self.control_after_generate:
            opts["control_after_generate"] = True
        if self.display:
            opts["display"] = self.display
        return {**opts, **super().options()}

    def check(self) -> None:
        super().check()
        if not (INT_MIN <= self.min <= self.default <= self.max <= INT_MAX):
            raise SchemaError(f"input {self.name!r}: need min <= default <= max within 64-bit range")
        if self.step <= 0:
            raise SchemaError(f"input {self.name!r}: step must be positive")


@dataclass(frozen=True, kw_only=True)
class FloatInput(InputSpec):
    type: str = t.FLOAT
    default: float = 0.0
    min: float = -1e18
    max: float = 1e18
    step: float = 0.1
    round: float | bool | None = None
    display: str | None = None

    is_widget: ClassVar[bool] = True

    def has_default(self) -> bool:
        return True

    def default_value(self) -> Any:
        return self.default

    def coerce(self, value: Any, limits: Limits) -> float:
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"Input '{self.name}' expects a number, got a boolean")
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value.strip())
        if isinstance(value, int):
            if abs(value) > 2**1000:
                raise InputError("value_bigger_than_max", f"Value {_short(value)} is out of range", max=self.max)
            value = float(value)
        if not isinstance(value, float):
            raise InputError(
                "invalid_input_type", f"Input '{self.name}' expects a number, got {type(value).__name__}"
            )
        if not math.isfinite(value):
            raise InputError("value_not_finite", f"Input '{self.name}' must be a finite number, got {value!r}")
        if value < self.min:
            raise InputError("value_smaller_than_min", f"Value {value} is smaller than min of {self.min}", min=self.min)
        if value > self.max:
            raise InputError("value_bigger_than_max", f"Value {value} is bigger than max of {self.max}", max=self.max)
        return value

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "min": self.min, "max": self.max, "step": self.step}
        if self.round is not None:
            opts["round"] = self.round
        if self.display:
            opts["display"] = self.display
        return {**opts, **super().options()}

    def check(self) -> None:
        super().check()
        if not all(math.isfinite(v) for v in (self.min, self.max, self.default)):
            raise SchemaError(f"input {self.name!r}: min, max and default must be finite")
        if not (self.min <= self.default <= self.max):
            raise SchemaError(f"input {self.name!r}: need min <= default <= max")


@dataclass(frozen=True, kw_only=True)
class StringInput(InputSpec):
    type: str = t.STRING
    default: str = ""
    multiline: bool = False
    placeholder: str | None = None
    dynamic_prompts: bool = False

    is_widget: ClassVar[bool] = True

    def has_default(self) -> bool:
        return True

    def default_value(self) -> Any:
        return self.default

    def coerce(self, value: Any, limits: Limits) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # clients that send numbers for text fields keep working
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"Input '{self.name}' expects text, got {type(value).__name__}")
        if len(value) > limits.max_string_length:
            raise InputError(
                "value_too_long",
                f"Input '{self.name}' is {len(value)} characters long; the limit is {limits.max_string_length}",
                max_length=limits.max_string_length,
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                "invalid_string", f"Input '{self.name}' holds an invalid character (lone surrogate) at {exc.start}"
            ) from None
        return value

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default}
        if self.multiline:
            opts["multiline"] = True
        if self.placeholder:
            opts["placeholder"] = self.placeholder
        if self.dynamic_prompts:
            opts["dynamicPrompts"] = True
        return {**opts, **super().options()}


@dataclass(frozen=True, kw_only=True)
class BooleanInput(InputSpec):
    type: str = t.BOOLEAN
    default: bool = False
    label_on: str | None = None
    label_off: str | None = None

    is_widget: ClassVar[bool] = True

    def has_default(self) -> bool:
        return True

    def default_value(self) -> Any:
        return self.default

    def coerce(self, value: Any, limits: Limits) -> bool:
        if not isinstance(value, bool):
            raise InputError(
                "invalid_input_type", f"Input '{self.name}' expects true or false, got {type(value).__name__}"
            )
        return value

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default}
        if self.label_on:
            opts["label_on"] = self.label_on
        if self.label_off:
            opts["label_off"] = self.label_off
        return {**opts, **super().options()}


@dataclass(frozen=True, kw_only=True)
class ComboInput(InputSpec):
    """A choice from a list.

    `choices` may be a callable for lists that change, such as files on disk: it is called with the
    engine's `Folders` (or None when there are none) each time the list is shown or checked.
    """

    type: str = t.COMBO
    choices: Sequence[Any] | Callable[[Any], Sequence[Any]] = ()
    default: Any = None

    is_widget: ClassVar[bool] = True

    def current_choices(self, folders: Any = None) -> list[Any]:
        c = self.choices
        return list(c(folders) if callable(c) else c)

    def has_default(self) -> bool:
        return True

    def default_value(self) -> Any:
        if self.default is not None:
            return self.default
        choices = self.current_choices()
        return choices[0] if choices else None

    def coerce(self, value: Any, limits: Limits, choices: Sequence[Any] | None = None) -> Any:
        allowed = self.current_choices() if choices is None else choices
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            if value in allowed:
                return value
        import difflib

        near = difflib.get_close_matches(str(value)[:200], [str(c) for c in allowed[:5000]], n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        shown = allowed[: limits.max_combo_preview]
        listing = ", ".join(repr(c) for c in shown) + (" ..." if len(allowed) > len(shown) else "")
        raise InputError(
            "value_not_in_list",
            f"Value not in list: {self.name}: {_short(value)!r} not in [{listing}].{hint}",
            input_config=[shown],
            close_matches=near,
        )

    def to_object_info(self, folders: Any = None) -> list[Any]:
        opts = self.options()
        return [self.current_choices(folders), opts] if opts else [self.current_choices(folders)]

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        return {**opts, **super().options()}

    def check(self) -> None:
        super().check()
        if self.default is not None and not callable(self.choices) and self.default not in self.choices:
            raise SchemaError(f"input {self.name!r}: default {self.default!r} is not one of its choices")


# Hidden inputs a node can ask for; the value is what the executor passes.
HIDDEN_KINDS = frozenset({"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT"})


@dataclass(frozen=True, kw_only=True)
class HiddenInput:
    name: str
    kind: str  # one of HIDDEN_KINDS


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass(frozen=True, kw_only=True)
class NodeSchema:
    """Everything the engine and the editor need to know about a node class, as data."""

    node_type: str
    display_name: str | None = None
    category: str = ""
    description: str = ""
    inputs: Sequence[InputSpec] = ()
    hidden: Sequence[HiddenInput] = ()
    outputs: Sequence[OutputSpec] = ()
    output_node: bool = False
    version: str = "1"
    input_is_list: bool = False
    deprecated: bool = False
    experimental: bool = False
    python_module: str = "nodes"

    def to_object_info(self, folders: Any = None) -> dict[str, Any]:
        required = {i.name: i.to_object_info(folders) for i in self.inputs if not i.optional}
        optional = {i.name: i.to_object_info(folders) for i in self.inputs if i.optional}
        info: dict[str, Any] = {
            "input": {"required": required},
            "input_order": {"required": list(required)},
            "output": [o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.display_name for o in self.outputs],
            "output_tooltips": [o.tooltip for o in self.outputs] if any(o.tooltip for o in self.outputs) else None,
            "name": self.node_type,
            "display_name": self.display_name or self.node_type,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
            "deprecated": self.deprecated,
            "experimental": self.experimental,
        }
        if info["output_tooltips"] is None:
            del info["output_tooltips"]
        if optional:
            info["input"]["optional"] = optional
            info["input_order"]["optional"] = list(optional)
        if self.hidden:
            info["input"]["hidden"] = {h.name: h.kind for h in self.hidden}
        return info


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else f"{text[:30]}...({len(text)} digits)"
