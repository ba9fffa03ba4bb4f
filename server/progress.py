"""Per-node progress of the running prompt: ComfyUI's `progress_state` websocket message.

The editor colours each node by its state and draws its own progress bar from this one message, so it
carries every node the run has touched: running (with value/max), finished or error. Because each
message holds every node, messages are coalesced: at most one per `interval` seconds (the latest state,
sent when the interval ends), and always one when the run ends, so a graph of thousands of trivial
nodes costs a handful of messages rather than one per node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

RUNNING, FINISHED, ERROR = "running", "finished", "error"
INTERVAL = 0.1  # seconds between two progress_state messages of one run


class ProgressState:
    """The node states of one run, changed on the run thread and sent from either thread."""

    def __init__(self, prompt_id: str, *, send: Callable[[dict[str, Any]], None], interval: float = INTERVAL) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._send = send  # thread-safe: hands the message to the event loop
        self._interval = interval
        self._lock = threading.Lock()
        self._sent_at = -float("inf")
        self._pending = False

    def _entry(self, node_id: str, display_node: str | None = None) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            parent, _, _ = node_id.rpartition(":")  # a node inside an expanded subgraph: "parent:child"
            entry = {"value": 0.0, "max": 1.0, "state": RUNNING, "node_id": node_id, "prompt_id": self.prompt_id,
                     "display_node_id": display_node or node_id, "parent_node_id": parent or None,
                     "real_node_id": node_id}
            self.nodes[node_id] = entry
        elif display_node:
            entry["display_node_id"] = display_node
        return entry

    def _message(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "nodes": {nid: dict(entry) for nid, entry in self.nodes.items()}}

    def _changed(self, *, force: bool = False) -> None:
        """Send now, or once the interval since the last message has passed (call with the lock held)."""
        now = time.monotonic()
        if force or now - self._sent_at >= self._interval:
            self._sent_at, self._pending = now, False
            self._send(self._message())
        elif not self._pending:
            self._pending = True
            delay = self._interval - (now - self._sent_at)
            # A timer thread, not the event loop: the relay may post to a cluster worker's stream instead.
            timer = threading.Timer(delay, self._flush)
            timer.daemon = True
            timer.start()

    def _flush(self) -> None:
        with self._lock:
            if self._pending:
                self._sent_at, self._pending = time.monotonic(), False
                self._send(self._message())

    def start(self, node_id: str, display_node: str | None = None) -> None:
        with self._lock:
            self._entry(node_id, display_node).update(state=RUNNING, value=0.0, max=1.0)
            self._changed()

    def update(self, node_id: str, value: float, max_value: float) -> None:
        with self._lock:
            self._entry(node_id).update(state=RUNNING, value=float(value),
                                        max=float(max_value) if max_value > 0 else 1.0)
            self._changed()

    def finish(self, node_id: str, display_node: str | None = None) -> None:
        with self._lock:
            entry = self._entry(node_id, display_node)
            entry.update(state=FINISHED, value=entry["max"])
            self._changed()

    def fail(self, node_id: str) -> None:
        with self._lock:
            self._entry(node_id)["state"] = ERROR
            self._changed(force=True)

    def end(self) -> None:
        """The run is over: its final state goes out now (if it touched any node)."""
        with self._lock:
            if self.nodes:
                self._changed(force=True)
