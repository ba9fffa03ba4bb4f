"""API-format workflows parsed once, at the boundary, into explicit types.

A bare JSON list in `inputs` is always a link attempt: `[source_id, output_index]` becomes a
`Link`, anything else of list shape is a malformed link (reported, never a silent constant).
A list-valued constant is written `{"__value__": [...]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Issue


@dataclass(frozen=True, slots=True)
class Link:
    node_id: str
    output_index: int


@dataclass(frozen=True, slots=True)
class BadLink:
    """A list that tried to be a link and is not; kept so validation reports it on its input."""

    raw: Any
    reason: str


@dataclass(slots=True, kw_only=True)
class NodeInstance:
    id: str
    class_type: str
    inputs: dict[str, Any]  # name -> Link | BadLink | constant
    title: str | None = None


@dataclass(kw_only=True)
class Workflow:
    nodes: dict[str, NodeInstance]
    raw: Mapping[str, Any] = field(default_factory=dict)
    # Problems found while parsing, keyed by node id ("" for the document itself).
    parse_issues: dict[str, list[Issue]] = field(default_factory=dict)

    def links_of(self, node_id: str) -> list[tuple[str, Link]]:
        return [(k, v) for k, v in self.nodes[node_id].inputs.items() if type(v) is Link]


def parse_link(value: list[Any]) -> Link | BadLink:
    if len(value) != 2:
        return BadLink(value, f"a link is a 2-element list [source_node_id, output_index], got {len(value)} elements")
    src, idx = value
    if isinstance(src, int) and not isinstance(src, bool):
        src = str(src)
    if not isinstance(src, str):
        return BadLink(value, f"the link's source node id must be a string, got {type(src).__name__}")
    if isinstance(idx, bool) or not isinstance(idx, int):
        return BadLink(value, f"the link's output index must be an integer, got {type(idx).__name__}")
    if idx < 0:
        return BadLink(value, f"the link's output index must not be negative, got {idx}")
    return Link(src, idx)


def parse_api_workflow(data: Any) -> Workflow:
    """Parse an API-format prompt. Structural problems are collected, not raised."""
    issues: dict[str, list[Issue]] = {}
    nodes: dict[str, NodeInstance] = {}
    if not isinstance(data, Mapping):
        issues[""] = [Issue(type="invalid_prompt", message="The prompt must be a JSON object of nodes",
                            details=f"got {type(data).__name__}")]
        return Workflow(nodes={}, raw={}, parse_issues=issues)
    for node_id, body in data.items():
        node_id = str(node_id)
        if not isinstance(body, Mapping):
            issues[node_id] = [Issue(type="invalid_node", message=f"Node {node_id} must be a JSON object",
                                     details=f"got {type(body).__name__}")]
            continue
        class_type = body.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            issues[node_id] = [Issue(type="missing_node_type",
                                     message=f"Node {node_id} has no 'class_type'",
                                     details="every node needs a string class_type naming its node type")]
            continue
        raw_inputs = body.get("inputs", {})
        if not isinstance(raw_inputs, Mapping):
            issues[node_id] = [Issue(type="invalid_node", message=f"Node {node_id}: 'inputs' must be an object",
                                     details=f"got {type(raw_inputs).__name__}")]
            continue
        inputs: dict[str, Any] = {}
        for name, value in raw_inputs.items():
            if type(value) is list:
                value = parse_link(value)
            elif type(value) is dict and "__value__" in value and len(value) == 1:
                value = value["__value__"]
            inputs[name] = value
        meta = body.get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) and isinstance(meta.get("title"), str) else None
        nodes[node_id] = NodeInstance(id=node_id, class_type=class_type, inputs=inputs, title=title)
    return Workflow(nodes=nodes, raw=data, parse_issues=issues)


@dataclass(kw_only=True)
class PromptRequest:
    """The envelope of POST /prompt (and of `main.py run`), with the workflow already parsed (graph/documents.py)."""

    workflow: Workflow
    client_id: str | None = None
    extra_data: dict[str, Any] = field(default_factory=dict)
    front: bool = False
    number: float | None = None
    prompt_id: str | None = None
    partial_execution_targets: list[str] | None = None
    warnings: list[str] = field(default_factory=list)  # from converting an editor-format workflow
