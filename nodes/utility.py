"""Torch-free utility nodes."""

from __future__ import annotations

import json
from typing import Any

from graph import InputSpec, Node, NodeResult, NodeSchema, OutputSpec, StringInput


def render(value: Any) -> str:
    """Readable text for any value: JSON where it can be, a shape summary for tensors, else repr."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} shape={list(shape)} dtype={value.dtype}"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=2)
    except (TypeError, ValueError):
        return repr(value)


class PreviewAny(Node):
    SCHEMA = NodeSchema(node_type="PreviewAny", display_name="Preview Any", category="utils", output_node=True,
                        description="Shows any value as text in the editor (and on the command line).",
                        inputs=[InputSpec(name="source", type="*", force_input=True)], python_module="nodes.utility")

    def execute(self, ctx, *, source: Any) -> NodeResult:
        return NodeResult(ui={"text": [render(source)]})


class StringConcatenate(Node):
    SCHEMA = NodeSchema(node_type="StringConcatenate", display_name="Concatenate", category="utils/string",
                        inputs=[StringInput(name="string_a", multiline=True),
                                StringInput(name="string_b", multiline=True),
                                StringInput(name="delimiter", default="")],
                        outputs=[OutputSpec(type="STRING")], python_module="nodes.utility")

    def execute(self, ctx, *, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (f"{string_a}{delimiter}{string_b}",)


NODES = [PreviewAny, StringConcatenate]
