"""GraphBuilder: write an API-format workflow in a few readable lines (tests, node expansion, scripts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeRef:
    id: str
    class_type: str

    def out(self, index: int = 0) -> list[Any]:
        """A link to one of this node's outputs, as the API format writes it."""
        return [self.id, index]

    def __getitem__(self, index: int) -> list[Any]:
        return self.out(index)


class GraphBuilder:
    """Builds `{"1": {"class_type": ..., "inputs": {...}}, ...}`; list constants are wrapped for you."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._nodes: dict[str, dict[str, Any]] = {}
        self._next = 1

    def node(self, class_type: str, id: str | None = None, /, **inputs: Any) -> NodeRef:
        node_id = id if id is not None else f"{self.prefix}{self._next}"
        self._next += 1
        if node_id in self._nodes:
            raise ValueError(f"node id {node_id!r} is used twice")
        self._nodes[node_id] = {"class_type": class_type, "inputs": {}}
        ref = NodeRef(node_id, class_type)
        self.set(ref, **inputs)
        return ref

    def set(self, ref: NodeRef, **inputs: Any) -> None:
        target = self._nodes[ref.id]["inputs"]
        for name, value in inputs.items():
            if isinstance(value, NodeRef):
                value = value.out(0)
            elif isinstance(value, tuple):
                value = {"__value__": list(value)}
            target[name] = value

    def build(self) -> dict[str, dict[str, Any]]:
        return {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in self._nodes.items()}
