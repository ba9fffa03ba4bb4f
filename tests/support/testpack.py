"""A small torch-free node pack for engine tests: numbers, strings, a sleep, a failure, a counter..."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from graph import (
    BooleanInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    Node,
    NodeContext,
    NodeResult,
    NodeSchema,
    OutputSpec,
    StringInput,
)
from graph.builder import GraphBuilder

ANY = "*"


def counted(ctx: NodeContext, label: str) -> None:
    calls = ctx.services.get("calls")
    if calls is not None:
        calls[label] += 1


class IntConst(Node):
    SCHEMA = NodeSchema(node_type="IntConst", category="test", inputs=[IntInput(name="value", min=-1000, max=10**6)],
                        outputs=[OutputSpec(type="INT")])

    def execute(self, ctx, *, value):
        counted(ctx, "IntConst")
        return (value,)


class FloatConst(Node):
    SCHEMA = NodeSchema(node_type="FloatConst", category="test", inputs=[FloatInput(name="value", min=-10, max=10)],
                        outputs=[OutputSpec(type="FLOAT")])

    def execute(self, ctx, *, value):
        return (value,)


class Text(Node):
    SCHEMA = NodeSchema(node_type="Text", category="test", inputs=[StringInput(name="text", multiline=True)],
                        outputs=[OutputSpec(type="STRING")])

    def execute(self, ctx, *, text):
        return (text,)


class Add(Node):
    SCHEMA = NodeSchema(node_type="Add", category="test", description="a + b",
                        inputs=[IntInput(name="a", min=-10**9, max=10**9), IntInput(name="b", min=-10**9, max=10**9)],
                        outputs=[OutputSpec(type="INT", name="sum")])

    def execute(self, ctx, *, a, b):
        counted(ctx, "Add")
        return (a + b,)


class Concat(Node):
    SCHEMA = NodeSchema(node_type="Concat", category="test",
                        inputs=[StringInput(name="a"), StringInput(name="b"),
                                StringInput(name="sep", optional=True)],
                        outputs=[OutputSpec(type="STRING")])

    def execute(self, ctx, *, a, b, sep=""):
        return (f"{a}{sep}{b}",)


class Sleep(Node):
    SCHEMA = NodeSchema(node_type="Sleep", category="test",
                        inputs=[InputSpec(name="value", type=ANY), FloatInput(name="seconds", min=0, max=60)],
                        outputs=[OutputSpec(type=ANY)])

    def execute(self, ctx, *, value, seconds):
        steps = 20
        for i in range(steps):
            ctx.progress(i, steps)
            time.sleep(seconds / steps)
        ctx.progress(steps, steps)
        return (value,)


class Fail(Node):
    SCHEMA = NodeSchema(node_type="Fail", category="test",
                        inputs=[InputSpec(name="value", type=ANY), StringInput(name="message", default="boom")],
                        outputs=[OutputSpec(type=ANY)])

    def execute(self, ctx, *, value, message):
        raise RuntimeError(message)


class Show(Node):
    """An output node: shows any value as text."""

    SCHEMA = NodeSchema(node_type="Show", category="test", output_node=True,
                        inputs=[InputSpec(name="value", type=ANY)])

    def execute(self, ctx, *, value):
        counted(ctx, "Show")
        return NodeResult(ui={"text": [repr(value)]})


class Collect(Node):
    """An output node taking whole lists (INPUT_IS_LIST)."""

    SCHEMA = NodeSchema(node_type="Collect", category="test", output_node=True, input_is_list=True,
                        inputs=[InputSpec(name="values", type=ANY)], outputs=[OutputSpec(type="INT")])

    def execute(self, ctx, *, values):
        return NodeResult(result=(sum(values),), ui={"values": list(values)})


class Range(Node):
    SCHEMA = NodeSchema(node_type="Range", category="test", inputs=[IntInput(name="count", min=0, max=1000)],
                        outputs=[OutputSpec(type="INT", is_list=True)])

    def execute(self, ctx, *, count):
        return (list(range(count)),)


class Switch(Node):
    SCHEMA = NodeSchema(node_type="Switch", category="test",
                        inputs=[BooleanInput(name="choose_a", default=True),
                                InputSpec(name="a", type=ANY, lazy=True), InputSpec(name="b", type=ANY, lazy=True)],
                        outputs=[OutputSpec(type=ANY)])

    def check_lazy_status(self, *, choose_a, a=None, b=None):
        return ["a"] if choose_a else ["b"]

    def execute(self, ctx, *, choose_a, a, b):
        return (a if choose_a else b,)


class RepeatAdd(Node):
    """Expands into `times` Add nodes: value + 1 + 1 + ..."""

    SCHEMA = NodeSchema(node_type="RepeatAdd", category="test",
                        inputs=[IntInput(name="value", min=-10**6, max=10**6),
                                IntInput(name="times", default=1, min=1, max=100)],
                        outputs=[OutputSpec(type="INT")])

    def execute(self, ctx, *, value, times):
        g = GraphBuilder()
        cur: Any = value
        for _ in range(times):
            cur = g.node("Add", a=cur, b=1).out(0)
        return NodeResult(result=(cur,), expand=g.build())


class Volatile(Node):
    """Never cached: its fingerprint is NaN (IS_CHANGED semantics)."""

    SCHEMA = NodeSchema(node_type="Volatile", category="test", inputs=[IntInput(name="value")],
                        outputs=[OutputSpec(type="INT")])

    def fingerprint(self, *, value):
        return float("nan")

    def execute(self, ctx, *, value):
        counted(ctx, "Volatile")
        return (value,)


class Stamp(Node):
    """Cached by a fingerprint a test controls through `StampNode.version`."""

    version = 0
    SCHEMA = NodeSchema(node_type="Stamp", category="test", inputs=[IntInput(name="value")],
                        outputs=[OutputSpec(type="INT")])

    def fingerprint(self, **constants):
        return Stamp.version

    def execute(self, ctx, *, value):
        counted(ctx, "Stamp")
        return (value + Stamp.version,)


class WhoAmI(Node):
    SCHEMA = NodeSchema(node_type="WhoAmI", category="test", output_node=True,
                        hidden=[HiddenInput(name="unique_id", kind="UNIQUE_ID"),
                                HiddenInput(name="prompt", kind="PROMPT"),
                                HiddenInput(name="extra_pnginfo", kind="EXTRA_PNGINFO")])

    def execute(self, ctx, *, unique_id, prompt, extra_pnginfo):
        return NodeResult(ui={"id": [unique_id], "nodes": [len(prompt)], "extra": [extra_pnginfo]})


class EvenOnly(Node):
    SCHEMA = NodeSchema(node_type="EvenOnly", category="test", inputs=[IntInput(name="value")],
                        outputs=[OutputSpec(type="INT")])

    def validate_inputs(self, *, limits, value):
        return True if value % 2 == 0 else f"value must be even, got {value}"

    def execute(self, ctx, *, value):
        return (value,)


NODES = [IntConst, FloatConst, Text, Add, Concat, Sleep, Fail, Show, Collect, Range, Switch, RepeatAdd, Volatile,
         Stamp, WhoAmI, EvenOnly]


def new_calls() -> Counter[str]:
    return Counter()


class SaveText(Node):
    """An output node that writes a file into the output folder (atomically) and names it in its ui."""

    SCHEMA = NodeSchema(node_type="SaveText", category="test", output_node=True,
                        inputs=[InputSpec(name="value", type=ANY), StringInput(name="filename_prefix", default="text")])

    def execute(self, ctx, *, value, filename_prefix):
        import os

        folder = ctx.folders.output
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}_{ctx.node_id}.txt"
        tmp = folder / f".{name}.tmp"
        tmp.write_text(str(value), encoding="utf-8")
        os.replace(tmp, folder / name)
        return NodeResult(ui={"files": [{"filename": name, "subfolder": "", "type": "output"}]})


NODES.append(SaveText)
