"""A ComfyUI V3 pack written the way V3 packs are: `io.ComfyNode` classes, a `ComfyExtension` and
`async def comfy_entrypoint()`. It exercises every part of the protocol Sumie serves
(tests/unit/test_v3_protocol.py)."""

from comfy_api.latest import ComfyExtension, io

from .flow import ExpandSum, Fresh, LazyPick, Pipeline, Seen, SlowAsync
from .values import Describe, Growing, Mode, Numbers, PassSame, Spec, Strict, TextList, Whoami

LOADED: list[str] = []


class TestExtension(ComfyExtension):
    async def on_load(self) -> None:
        LOADED.append("on_load")

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [Numbers, Describe, Spec, Strict, Whoami, Growing, Mode, PassSame, TextList, LazyPick, ExpandSum,
                SlowAsync, Seen, Fresh]


async def comfy_entrypoint() -> TestExtension:
    return TestExtension()


# ComfyUI also accepts V3 classes in NODE_CLASS_MAPPINGS (the key names the node).
NODE_CLASS_MAPPINGS = {"V3MappedPipeline": Pipeline}
