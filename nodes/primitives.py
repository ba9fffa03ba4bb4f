"""Primitive value nodes: a typed constant that several inputs can share."""

from __future__ import annotations

from graph import BooleanInput, FloatInput, IntInput, Node, NodeSchema, OutputSpec, StringInput
from graph.limits import INT_MAX, INT_MIN


def _schema(node_id: str, display: str, spec, out_type: str) -> NodeSchema:
    return NodeSchema(node_type=node_id, display_name=display, category="utils/primitive", inputs=[spec],
                      outputs=[OutputSpec(type=out_type)], python_module="nodes.primitives")


class PrimitiveInt(Node):
    SCHEMA = _schema("PrimitiveInt", "Int", IntInput(name="value", min=INT_MIN, max=INT_MAX,
                                                     control_after_generate=True), "INT")

    def execute(self, ctx, *, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    SCHEMA = _schema("PrimitiveFloat", "Float", FloatInput(name="value", min=-1e18, max=1e18), "FLOAT")

    def execute(self, ctx, *, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    SCHEMA = _schema("PrimitiveString", "String", StringInput(name="value"), "STRING")

    def execute(self, ctx, *, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    SCHEMA = _schema("PrimitiveStringMultiline", "String (Multiline)", StringInput(name="value", multiline=True),
                     "STRING")

    def execute(self, ctx, *, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean(Node):
    SCHEMA = _schema("PrimitiveBoolean", "Boolean", BooleanInput(name="value"), "BOOLEAN")

    def execute(self, ctx, *, value: bool) -> tuple[bool]:
        return (value,)


NODES = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean]
