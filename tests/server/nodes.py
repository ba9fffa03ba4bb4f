"""Nodes for server tests: a real output node that writes PNG files, a previewing node, and a gate."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

from PIL import Image

from graph import InputSpec, IntInput, Node, NodeRegistry, NodeResult, NodeSchema, OutputSpec, StringInput
from tests.support import testpack

ANY = "*"


def _next_name(directory: Path, prefix: str) -> str:
    taken = {p.name for p in directory.glob(f"{prefix}_*_.png")}
    counter = 1
    while f"{prefix}_{counter:05}_.png" in taken:
        counter += 1
    return f"{prefix}_{counter:05}_.png"


class SavePng(Node):
    """Writes an 8x8 PNG whose colour depends on the value: temp name, fsync, rename (no half file visible)."""

    SCHEMA = NodeSchema(node_type="SavePng", category="test", output_node=True,
                        inputs=[InputSpec(name="value", type=ANY), StringInput(name="filename_prefix", default="t")])

    def execute(self, ctx, *, value, filename_prefix):
        if ctx.folders is None:
            raise RuntimeError(f"node {ctx.node_id} (SavePng) needs the output folder")
        directory = ctx.folders.output
        directory.mkdir(parents=True, exist_ok=True)
        name = _next_name(directory, filename_prefix)
        colour = tuple(hashlib.blake2b(repr(value).encode()).digest()[:3])
        tmp = directory / f".{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            Image.new("RGB", (8, 8), colour).save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
        return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class PreviewSteps(Node):
    """Reports `steps` progress steps, each with a small preview image made on demand (as samplers do)."""

    SCHEMA = NodeSchema(node_type="PreviewSteps", category="test",
                        inputs=[InputSpec(name="value", type=ANY), IntInput(name="steps", default=3, min=1, max=100)],
                        outputs=[OutputSpec(type=ANY)])

    def execute(self, ctx, *, value, steps):
        for i in range(1, steps + 1):
            ctx.progress(i, steps, lambda i=i: Image.new("RGB", (16, 16), (i * 20 % 256, 0, 0)))
        return (value,)


class Gate(Node):
    """Blocks until the test opens the `gate` service (a threading.Event); honours interrupts meanwhile."""

    SCHEMA = NodeSchema(node_type="Gate", category="test", inputs=[InputSpec(name="value", type=ANY)],
                        outputs=[OutputSpec(type=ANY)])

    def fingerprint(self, *, value=None):
        return float("nan")  # never cached: every run waits at the gate

    def execute(self, ctx, *, value):
        gate: threading.Event = ctx.service("gate")
        ctx.progress(0, 1)
        while not gate.wait(0.01):
            ctx.check_interrupt()
        ctx.progress(1, 1)
        return (value,)


class Stubborn(Node):
    """Like Gate, but never checks the interrupt token (a long call into a library that cannot be stopped)."""

    SCHEMA = NodeSchema(node_type="Stubborn", category="test", inputs=[InputSpec(name="value", type=ANY)],
                        outputs=[OutputSpec(type=ANY)])

    def fingerprint(self, *, value=None):
        return float("nan")

    def execute(self, ctx, *, value):
        ctx.service("gate").wait(30)
        return (value,)


NODES = [SavePng, PreviewSteps, Gate, Stubborn]


def make_registry() -> NodeRegistry:
    """The torch-free test pack plus these nodes."""
    registry = NodeRegistry()
    registry.register_module(testpack)
    registry.register_all(NODES, source=__name__)
    return registry
