"""V3 nodes about running: laziness, expansion, async execute, fingerprints, ui images."""

import asyncio
from collections import Counter

from comfy_api.latest import ComfyAPI, io, ui

CALLS: Counter = Counter()
api = ComfyAPI()


class LazyPick(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3LazyPick", category="tests/v3",
                         inputs=[io.Boolean.Input("first"), io.Int.Input("a", lazy=True, force_input=True),
                                 io.Int.Input("b", lazy=True, force_input=True)],
                         outputs=[io.Int.Output()])

    @classmethod
    def check_lazy_status(cls, first, a=None, b=None) -> list[str]:
        return ["a"] if first else ["b"]

    @classmethod
    def execute(cls, first, a=None, b=None) -> io.NodeOutput:
        return io.NodeOutput(a if first else b)


class ExpandSum(io.ComfyNode):
    """Replaces itself with a small graph of the engine's test nodes (IntConst + Add)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3ExpandSum", category="tests/v3", enable_expand=True,
                         inputs=[io.Int.Input("x", default=1, min=-100, max=100)], outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, x) -> io.NodeOutput:
        graph = {"c": {"class_type": "IntConst", "inputs": {"value": 10}},
                 "s": {"class_type": "Add", "inputs": {"a": ["c", 0], "b": x}}}
        return io.NodeOutput(["s", 0], expand=graph)


class SlowAsync(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3SlowAsync", category="tests/v3",
                         inputs=[io.String.Input("text", default="hi")], outputs=[io.String.Output()])

    @classmethod
    async def execute(cls, text) -> io.NodeOutput:
        await asyncio.sleep(0.01)
        await api.execution.set_progress(1, 2)
        return io.NodeOutput(text[::-1])


class Fresh(io.ComfyNode):
    """not_idempotent: two such nodes with the same inputs each run (results are cached per node id)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Fresh", category="tests/v3", not_idempotent=True,
                         inputs=[io.Int.Input("x", default=0)], outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, x) -> io.NodeOutput:
        CALLS["Fresh"] += 1
        return io.NodeOutput(x + CALLS["Fresh"])


class Seen(io.ComfyNode):
    """fingerprint_inputs joins the cache key: the same fingerprint reuses the last result."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Seen", category="tests/v3",
                         inputs=[io.String.Input("key", default="k"), io.Int.Input("salt", default=0)],
                         outputs=[io.Int.Output()])

    @classmethod
    def fingerprint_inputs(cls, key, salt) -> str:
        return key

    @classmethod
    def execute(cls, key, salt) -> io.NodeOutput:
        CALLS["Seen"] += 1
        return io.NodeOutput(CALLS["Seen"])


class Pipeline(io.ComfyNode):
    """Listed in NODE_CLASS_MAPPINGS; shows an image preview built by ui.PreviewImage."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Pipeline", category="tests/v3", is_output_node=True,
                         inputs=[io.Float.Input("gray", default=0.5, min=0.0, max=1.0)], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, gray) -> io.NodeOutput:
        import torch

        image = torch.full((1, 4, 4, 3), gray)
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))
