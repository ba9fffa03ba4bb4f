"""Typed events the executor emits; the websocket hub, CLI progress bar and job store are listeners."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sumie.events")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted:
    run_id: str
    timestamp: float


@dataclass(frozen=True, kw_only=True, slots=True)
class NodesCached:
    run_id: str
    node_ids: Sequence[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeStarted:
    run_id: str
    node_id: str
    class_type: str
    display_node: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    run_id: str
    node_id: str
    value: float
    max: float
    # None, or a zero-argument callable returning a small PIL image: nodes pay for a preview only
    # when a listener asks for it.
    preview: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeFinished:
    """A node's outputs are ready. `ui` is what an output node shows (None for most nodes)."""

    run_id: str
    node_id: str
    class_type: str
    display_node: str
    ui: dict[str, Any] | None
    cached: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeFailure:
    node_id: str
    node_type: str
    exception_message: str
    exception_type: str
    traceback: list[str]
    current_inputs: dict[str, Any]
    executed: list[str]

    def describe(self) -> str:
        return f"node {self.node_id} ({self.node_type}) failed: {self.exception_type}: {self.exception_message}"


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeFailed:
    run_id: str
    failure: NodeFailure


@dataclass(frozen=True, kw_only=True, slots=True)
class RunInterrupted:
    run_id: str
    node_id: str | None
    node_type: str | None
    executed: list[str]
    reason: str = "interrupted"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished:
    run_id: str
    status: str  # "success" | "error" | "interrupted"
    timestamp: float
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


Event = RunStarted | NodesCached | NodeStarted | Progress | NodeFinished | NodeFailed | RunInterrupted | RunFinished
Listener = Callable[[Event], None]


class EventBus:
    """Fan-out to listeners; a failing listener is logged and never breaks the run."""

    __slots__ = ("listeners",)

    def __init__(self, listeners: Sequence[Listener] = ()) -> None:
        self.listeners: list[Listener] = list(listeners)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, type(event).__name__)
