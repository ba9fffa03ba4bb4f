"""Per-node progress of the running prompt: ComfyUI's `progress_state` websocket message.

The editor colours each node by its state and draws its own progress bar from this one message, so it
carries every node the run has touched: pending, running (with value/max), finished or error.
"""

from __future__ import annotations

from typing import Any

RUNNING, FINISHED, ERROR = "running", "finished", "error"


class ProgressState:
    """The node states of one run; each method returns the message's data after the change."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str, display_node: str | None = None) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            parent, _, _ = node_id.rpartition(":")  # a node inside an expanded subgraph: "parent:child"
            entry = {"value": 0.0, "max": 1.0, "state": "pending", "node_id": node_id, "prompt_id": self.prompt_id,
                     "display_node_id": display_node or node_id, "parent_node_id": parent or None,
                     "real_node_id": node_id}
            self.nodes[node_id] = entry
        elif display_node:
            entry["display_node_id"] = display_node
        return entry

    def message(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "nodes": {nid: dict(entry) for nid, entry in self.nodes.items()}}

    def start(self, node_id: str, display_node: str | None = None) -> dict[str, Any]:
        entry = self._entry(node_id, display_node)
        entry.update(state=RUNNING, value=0.0, max=1.0)
        return self.message()

    def update(self, node_id: str, value: float, max_value: float) -> dict[str, Any]:
        entry = self._entry(node_id)
        entry.update(state=RUNNING, value=float(value), max=float(max_value) if max_value > 0 else 1.0)
        return self.message()

    def finish(self, node_id: str, display_node: str | None = None) -> dict[str, Any]:
        entry = self._entry(node_id, display_node)
        entry.update(state=FINISHED, value=entry["max"])
        return self.message()

    def fail(self, node_id: str) -> dict[str, Any]:
        self._entry(node_id)["state"] = ERROR
        return self.message()
