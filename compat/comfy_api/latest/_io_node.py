"""`comfy_api.latest.io` node classes: `Schema`, `ComfyNode`, `NodeOutput`, hidden inputs and ui outputs.

A V3 node is a `ComfyNode` subclass whose classmethod `define_schema()` returns a `Schema` and whose
classmethod `execute(**inputs)` (plain or `async def`) returns a `NodeOutput`. Optional classmethods:
`validate_inputs`, `fingerprint_inputs` and `check_lazy_status`. While `execute` runs, `cls.hidden`
holds the hidden inputs the schema asked for. `plugins.comfy_v3` turns such a class into a registered node.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ._io import Input, Output


class Hidden(StrEnum):
    """Values the engine supplies instead of the user: the prompt, the node's id, workflow metadata..."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """`cls.hidden` while a V3 node runs; a hidden value the schema did not ask for reads as None."""

    def __init__(self, unique_id: Any = None, prompt: Any = None, extra_pnginfo: Any = None, dynprompt: Any = None,
                 auth_token_comfy_org: Any = None, api_key_comfy_org: Any = None, **_: Any) -> None:
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt
        self.auth_token_comfy_org = auth_token_comfy_org
        self.api_key_comfy_org = api_key_comfy_org

    def __getattr__(self, key: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, d: dict[Any, Any] | None) -> HiddenHolder:
        d = d or {}
        return cls(**{h.name: d.get(h, d.get(h.value)) for h in Hidden})


class Schema:
    """What a V3 node declares: id, inputs, outputs, hidden inputs and flags.

    Options newer than this layer are accepted and kept in `more` (a pack written for a newer ComfyUI
    still loads).
    """

    def __init__(self, node_id: str, display_name: str | None = None, category: str = "sd",
                 inputs: list[Input] | None = None, outputs: list[Output] | None = None,
                 hidden: list[Hidden] | None = None, description: str = "", is_input_list: bool = False,
                 is_output_node: bool = False, is_deprecated: bool = False, is_experimental: bool = False,
                 is_api_node: bool = False, not_idempotent: bool = False, enable_expand: bool = False,
                 **more: Any) -> None:
        self.node_id = node_id
        self.display_name = display_name
        self.category = category
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.hidden = list(hidden or [])
        self.description = description
        self.is_input_list = is_input_list
        self.is_output_node = is_output_node
        self.is_deprecated = is_deprecated
        self.is_experimental = is_experimental
        self.is_api_node = is_api_node
        self.not_idempotent = not_idempotent
        self.enable_expand = enable_expand
        self.more = more

    def finalize(self) -> None:
        """Output nodes get the prompt and workflow metadata (to save them in files); outputs get ids."""
        if self.is_output_node:
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        if self.is_api_node:
            for h in (Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, out in enumerate(self.outputs):
            if out.id is None:
                out.id = f"_{i}_{out.get_io_type()}_"

    def validate(self) -> None:
        """Ids must be unique among inputs, among outputs, and between the two."""
        input_ids = [i.id for i in self.inputs]
        output_ids = [o.id for o in self.outputs]
        problems = []
        for label, ids in (("Input", input_ids), ("Output", output_ids)):
            dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
            if dupes:
                problems.append(f"{label} ids must be unique, but {dupes} are not")
        both = set(input_ids) & set(output_ids)
        if both:
            problems.append(f"ids must be unique between inputs and outputs, but {sorted(both, key=str)} are not")
        if problems:
            raise ValueError("; ".join(problems))
        for part in (*self.inputs, *self.outputs):
            part.validate()


class ComfyNode:
    """Base class of V3 nodes: override `define_schema` and `execute` (classmethods)."""

    hidden: HiddenHolder = HiddenHolder()
    SCHEMA: Schema | None = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} does not define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} does not define execute()")

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        """By default every lazy input not evaluated yet (None) is needed."""
        return [name for name, value in kwargs.items() if value is None]

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - the protocol's name
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        cls.SCHEMA = schema
        return schema


def overrides(cls: type, name: str) -> bool:
    """Whether a V3 node class defines `name` itself rather than inheriting ComfyNode's placeholder."""
    own = getattr(cls, name, None)
    base = getattr(ComfyNode, name, None)
    return own is not None and getattr(own, "__func__", own) is not getattr(base, "__func__", base)


class NodeOutput:
    """What `execute` returns: the output values, and optionally `ui=` and `expand=` (a sub-graph)."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict[str, Any] | None = None,
                 block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeOutput:
        result = data.get("result") or ()
        return cls(*result, ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class _UIOutput:
    """What `ui.*` helpers return: `as_dict()` is the node's ui entry in history and websocket messages."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError
