"""Engine events -> ComfyUI websocket messages (section 4 of comfy-compat.md).

The relay runs in the run thread: it serialises each message there and hands the text to the hub on
the event loop with `call_soon_threadsafe`, which keeps the order. It also keeps the run's current
state for clients that reconnect, and the messages that history stores. The terminal message
(success, error, interrupted) is held back: the worker sends it after history is written, so a
client that reads /history on `execution_success` or `executing: null` finds the result there.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graph.events import (
    Event,
    NodeFailed,
    NodeFinished,
    NodesCached,
    NodeStarted,
    Progress,
    RunFinished,
    RunInterrupted,
    RunStarted,
)

from .progress import ProgressState
from .wire import dumps

log = logging.getLogger("sumie.relay")

PREVIEW_IMAGE = 1
FORMAT_JPEG, FORMAT_PNG = 1, 2
MAX_PREVIEW_SIDE = 512


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(kw_only=True)
class RunState:
    """What a reconnecting client needs to catch up with a running prompt."""

    prompt_id: str
    client_id: str | None
    start: dict[str, Any] | None = None
    cached: dict[str, Any] | None = None
    executed: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None

    def replay(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        if self.start is not None:
            out.append(("execution_start", self.start))
        if self.cached is not None:
            out.append(("execution_cached", self.cached))
        out.extend(("executed", data) for data in list(self.executed))
        if self.current is not None:
            out.append(("executing", self.current))
        if self.progress is not None:
            out.append(("progress", self.progress))
        return out


class Relay:
    """An executor listener for one run."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, send_text: Callable[[str, str | None], None],
                 send_preview: Callable[[bytes, str | None], None], state: RunState, previews: bool) -> None:
        self.loop = loop
        self.send_text = send_text
        self.send_preview = send_preview
        self.state = state
        self.prompt_id = state.prompt_id
        self.sid = state.client_id
        self.previews = previews
        self.history_messages: list[list[Any]] = []
        self.terminal: tuple[str, dict[str, Any]] | None = None
        self.nodes = ProgressState(state.prompt_id,  # per-node states: progress_state messages
                                   send=lambda data: self._send("progress_state", data))

    def _send(self, type_: str, data: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.send_text, dumps({"type": type_, "data": data}), self.sid)

    def _ensure_cached_sent(self) -> None:
        # ComfyUI always sends execution_cached after execution_start, even with no cached node.
        if self.state.cached is None:
            data = {"nodes": [], "prompt_id": self.prompt_id, "timestamp": now_ms()}
            self.state.cached = data
            self.history_messages.append(["execution_cached", data])
            self._send("execution_cached", data)

    def __call__(self, event: Event) -> None:
        pid = self.prompt_id
        state = self.state
        if isinstance(event, RunStarted):
            data = {"prompt_id": pid, "timestamp": int(event.timestamp * 1000)}
            state.start = data
            self.history_messages.append(["execution_start", data])
            self._send("execution_start", data)
            return
        if isinstance(event, NodesCached):
            data = {"nodes": list(event.node_ids), "prompt_id": pid, "timestamp": now_ms()}
            state.cached = data
            self.history_messages.append(["execution_cached", data])
            self._send("execution_cached", data)
            return
        self._ensure_cached_sent()
        if isinstance(event, NodeStarted):
            data = {"node": event.node_id, "display_node": event.display_node, "prompt_id": pid}
            state.current = data
            state.progress = None
            self._send("executing", data)
            self.nodes.start(event.node_id, event.display_node)
        elif isinstance(event, Progress):
            data = {"value": event.value, "max": event.max, "prompt_id": pid, "node": event.node_id}
            state.progress = data
            self._send("progress", data)
            self.nodes.update(event.node_id, event.value, event.max)
            if self.previews and event.preview is not None:
                frame = encode_preview(event.preview)
                if frame is not None:
                    self.loop.call_soon_threadsafe(self.send_preview, frame, self.sid)
        elif isinstance(event, NodeFinished):
            if not event.cached:
                self.nodes.finish(event.node_id, event.display_node)
            if event.ui is not None:
                data = {"node": event.node_id, "display_node": event.display_node, "output": event.ui,
                        "prompt_id": pid}
                state.executed.append(data)
                self._send("executed", data)
        elif isinstance(event, NodeFailed):
            f = event.failure
            if f.node_id is not None:
                self.nodes.fail(f.node_id)
            self.terminal = ("execution_error", {
                "prompt_id": pid, "node_id": f.node_id, "node_type": f.node_type, "executed": list(f.executed),
                "exception_message": f.exception_message, "exception_type": f.exception_type,
                "traceback": list(f.traceback), "current_inputs": f.current_inputs, "current_outputs": {},
                "timestamp": now_ms()})
        elif isinstance(event, RunInterrupted):
            self.nodes.end()
            self.terminal = ("execution_interrupted", {
                "prompt_id": pid, "node_id": event.node_id, "node_type": event.node_type,
                "executed": list(event.executed), "reason": event.reason, "timestamp": now_ms()})
        elif isinstance(event, RunFinished):
            self.nodes.end()
            if event.status == "success":
                self.terminal = ("execution_success", {"prompt_id": pid, "timestamp": int(event.timestamp * 1000)})

    def crashed(self, exc: BaseException, tb: list[str]) -> None:
        """The engine itself raised (a bug, or a planning error): report it like a node failure."""
        self._ensure_cached_sent()
        self.terminal = ("execution_error", {
            "prompt_id": self.prompt_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": str(exc), "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "traceback": tb, "current_inputs": {}, "current_outputs": {}, "timestamp": now_ms()})


def encode_preview(preview: Any) -> bytes | None:
    """A binary preview frame: 4-byte event type 1, 4-byte image format, then the encoded image."""
    if callable(preview):  # nodes hand a callable so the image is only made when someone wants it
        try:
            preview = preview()
        except Exception:
            log.exception("making a preview image failed; skipped")
            return None
    fmt_name = "JPEG"
    image = preview
    if isinstance(preview, tuple) and len(preview) >= 2 and isinstance(preview[0], str):
        fmt_name, image = preview[0].upper(), preview[1]
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        fmt = FORMAT_PNG if data.startswith(b"\x89PNG") else FORMAT_JPEG
        return struct.pack(">II", PREVIEW_IMAGE, fmt) + data
    if not hasattr(image, "save") or not hasattr(image, "convert"):
        log.debug("preview of type %s is not an image; skipped", type(image).__name__)
        return None
    fmt = FORMAT_PNG if fmt_name == "PNG" else FORMAT_JPEG
    try:
        img = image.convert("RGB") if fmt == FORMAT_JPEG else image
        if max(img.size) > MAX_PREVIEW_SIDE:
            img = img.copy()
            img.thumbnail((MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="PNG" if fmt == FORMAT_PNG else "JPEG", quality=90)
    except (OSError, ValueError) as exc:
        log.warning("could not encode a preview: %s", exc)
        return None
    return struct.pack(">II", PREVIEW_IMAGE, fmt) + buf.getvalue()
