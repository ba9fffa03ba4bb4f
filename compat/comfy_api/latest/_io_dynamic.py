"""`comfy_api.latest.io` types with more than one io type, and dynamic inputs (Autogrow, DynamicCombo).

`plugins.comfy_v3` expands a dynamic input into concrete inputs of our schema, named "<id>.<name>" as
ComfyUI's editor names them, and nests their values back into one dict argument for `execute`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from ._io import AnyType, ComfyTypeI, ComfyTypeIO, Input, Output, WidgetInput, comfytype


def _type_names(types: Iterable[Any]) -> list[str]:
    return [t.io_type if isinstance(t, type) or hasattr(t, "io_type") else str(t) for t in types]


# -- types with more than one io type, and dynamic inputs -------------------------------------------------
@comfytype(io_type="COMFY_MULTITYPED_V3")
class MultiType(ComfyTypeI):
    """An input that accepts several types; given a widget Input as `id`, the widget is kept."""

    class Input(Input):
        def __init__(self, id: Any, types: list[Any], display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None) -> None:
            self.input_override: Input | None = None
            if isinstance(id, Input):
                self.input_override = copy.copy(id)
                if isinstance(self.input_override, WidgetInput):  # the editor draws this widget for the socket
                    self.input_override.widget_type = self.input_override.get_io_type()
                optional = optional or bool(id.optional)
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                id = id.id
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
            self.types = list(types)

        def get_io_type(self) -> str:
            names = _type_names(self.types)
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict[str, Any]:
            own = super().as_dict()
            return {**self.input_override.as_dict(), **own} if self.input_override is not None else own


@comfytype(io_type="COMFY_MATCHTYPE_V3")
class MatchType(ComfyTypeIO):
    """Inputs and outputs sharing one template take the same type (any of `allowed_types`)."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = AnyType) -> None:
            if not isinstance(allowed_types, (list, tuple)):
                allowed_types = [allowed_types]
            self.template_id = template_id
            self.allowed_types = list(allowed_types)

        def io_type(self) -> str:
            names = _type_names(self.allowed_types)
            return "*" if "*" in names else ",".join(names)

        def as_dict(self) -> dict[str, Any]:
            return {"template_id": self.template_id, "allowed_types": ",".join(_type_names(self.allowed_types))}

    class Input(Input):
        def __init__(self, id: str, template: MatchType.Template, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict | None = None, raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
            self.template = template

        def get_io_type(self) -> str:
            return self.template.io_type()

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), "template": self.template.as_dict()}

    class Output(Output):
        def __init__(self, template: MatchType.Template, id: str | None = None, display_name: str | None = None,
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template

        def get_io_type(self) -> str:
            return self.template.io_type()


class DynamicInput(Input):
    """An input that stands for several inputs (Autogrow, DynamicCombo)."""


@comfytype(io_type="COMFY_AUTOGROW_V3")
class Autogrow(ComfyTypeI):
    """A growing list of inputs of one kind ("image0", "image1", ...); execute receives them as a dict."""

    MAX_NAMES = 100

    class _Template:
        def __init__(self, input: Input, names: list[str], min: int) -> None:
            if isinstance(input, DynamicInput):
                raise ValueError("an Autogrow template cannot itself be a dynamic input")
            self.input = copy.copy(input)
            if isinstance(self.input, WidgetInput):
                self.input.force_input = True
            self.names = list(names)[:Autogrow.MAX_NAMES]
            if min < 0:
                raise ValueError("Autogrow min must be >= 0")
            self.min = min

        def inputs(self) -> list[Input]:
            made = []
            for name in self.names:
                one = copy.copy(self.input)
                one.id = name
                made.append(one)
            return made

    class TemplatePrefix(_Template):
        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10) -> None:
            if not 1 <= max <= Autogrow.MAX_NAMES:
                raise ValueError(f"Autogrow max must be within 1..{Autogrow.MAX_NAMES}")
            super().__init__(input, [f"{prefix}{i}" for i in range(max)], min)
            self.prefix, self.max = prefix, max

    class TemplateNames(_Template):
        pass

    class Input(DynamicInput):
        def __init__(self, id: str, template: Autogrow._Template, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template


@comfytype(io_type="COMFY_DYNAMICCOMBO_V3")
class DynamicCombo(ComfyTypeI):
    """A combo whose chosen option brings its own inputs; execute receives {id: key, input: value, ...}."""

    class Option:
        def __init__(self, key: str, inputs: list[Input]) -> None:
            self.key, self.inputs = key, list(inputs)

    class Input(DynamicInput):
        def __init__(self, id: str, options: list[DynamicCombo.Option], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)
