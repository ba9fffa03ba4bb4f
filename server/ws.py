"""The websocket hub: `/ws?clientId=`, one bounded send buffer per socket, routing by client id.

Each socket has its own sender task, so one slow reader never delays the others. When a socket's
buffer is full, previews are dropped first; a socket that still cannot keep up with the text events
is closed (its client reconnects and gets the current state) rather than growing memory unbounded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from .relay import RunState
from .wire import dumps

log = logging.getLogger("sumie.ws")

_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


class SendBuffer:
    """Messages waiting for one socket, bounded in count and in bytes (one preview frame can be a megabyte).

    Full: previews are dropped (the oldest queued ones first, to make room for text); when only text
    is queued and it still does not fit, `offer` says no and the caller closes the socket.
    """

    def __init__(self, capacity: int, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.items: deque[tuple[str | bytes, bool]] = deque()
        self.bytes = 0
        self.dropped_previews = 0

    def __len__(self) -> int:
        return len(self.items)

    def _fits(self, size: int) -> bool:
        return len(self.items) < self.capacity and self.bytes + size <= self.max_bytes

    def offer(self, message: str | bytes, *, droppable: bool) -> bool:
        size = _size(message)
        if not self._fits(size):
            if droppable:
                self.dropped_previews += 1
                return True
            self._drop_previews_for(size)
            if not self._fits(size):
                return False
        self.items.append((message, droppable))
        self.bytes += size
        return True

    def _drop_previews_for(self, size: int) -> None:
        """Drop queued previews, oldest first, until a text message of `size` bytes fits (or none are left)."""
        kept: deque[tuple[str | bytes, bool]] = deque()
        count, total = len(self.items), self.bytes
        for item in self.items:
            if item[1] and not (count < self.capacity and total + size <= self.max_bytes):
                count -= 1
                total -= _size(item[0])
                self.dropped_previews += 1
            else:
                kept.append(item)
        self.items, self.bytes = kept, total

    def pop(self) -> str | bytes:
        message = self.items.popleft()[0]
        self.bytes -= _size(message)
        return message

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0


def _size(message: str | bytes) -> int:
    """Bytes the message holds (an upper bound for non-ASCII text, which is cheaper than encoding it)."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return 4 * len(message)


class Client:
    """One connected socket and its outgoing buffer, drained by its own task."""

    def __init__(self, sid: str, ws: web.WebSocketResponse, capacity: int, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.sid = sid
        self.ws = ws
        self.buffer = SendBuffer(capacity, max_bytes)
        self.ready = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.feature_flags: dict = {}  # what the client said it supports (its first message)

    def offer(self, message: str | bytes, *, droppable: bool) -> bool:
        """Queue a message; False when the socket is hopelessly behind and must be closed."""
        if self.closing:
            return True
        if not self.buffer.offer(message, droppable=droppable):
            return False
        self.ready.set()
        return True

    async def pump(self) -> None:
        ws = self.ws
        try:
            while not ws.closed:
                if not self.buffer:
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                message = self.buffer.pop()
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
        except (ConnectionError, RuntimeError) as exc:  # peer gone mid-send: the read loop ends the socket
            log.debug("websocket %s send stopped: %s", self.sid, exc)


class Hub:
    """All connected sockets. Call its methods on the event loop thread only."""

    def __init__(self, *, capacity: int, queue_remaining: Callable[[], int],
                 max_bytes: int = 16 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.clients: dict[str, Client] = {}
        self.queue_remaining = queue_remaining  # the job store's count
        self.running: RunState | None = None  # the run in progress, set by the worker: replayed on reconnect
        self.on_text: Callable[[Client, str], None] | None = None  # text a client sends (feature flags)
        self.scope_sid: Callable[[web.Request, str], str] | None = None
        self.runs: dict[str, RunState] = {}  # runs in progress on cluster workers (server/cluster), the same

    def status_message(self, sid: str | None = None) -> str:
        data: dict = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        if sid is not None:
            data["sid"] = sid
        return dumps({"type": "status", "data": data})

    # -- sending --------------------------------------------------------------------------------
    def send_text(self, text: str, sid: str | None = None) -> None:
        """To one client (its socket, if connected) or, with sid None, to everyone."""
        if sid is None:
            for client in list(self.clients.values()):
                self._offer(client, text, droppable=False)
        else:
            client = self.clients.get(sid)
            if client is not None:
                self._offer(client, text, droppable=False)

    def send(self, type_: str, data: dict, sid: str | None = None) -> None:
        self.send_text(dumps({"type": type_, "data": data}), sid)

    def send_preview(self, frame: bytes, sid: str | None) -> None:
        targets = list(self.clients.values()) if sid is None else [c for c in (self.clients.get(sid),) if c]
        for client in targets:
            self._offer(client, frame, droppable=True)

    def broadcast_status(self) -> None:
        self.send_text(self.status_message())

    def _offer(self, client: Client, message: str | bytes, *, droppable: bool) -> None:
        if not client.offer(message, droppable=droppable):
            log.warning("websocket %s is too slow (%d messages, %d bytes waiting): closing it", client.sid,
                        len(client.buffer), client.buffer.bytes)
            client.closing = True
            client.buffer.clear()
            asyncio.get_running_loop().create_task(
                client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow: reconnect"))

    # -- connections ----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        requested = request.query.get("clientId", "")
        sid = requested if _CLIENT_ID.fullmatch(requested) else uuid.uuid4().hex
        if self.scope_sid is not None:  # --multi-user: a user's socket ids are their own
            sid = self.scope_sid(request, sid)
        client = Client(sid, ws, self.capacity, self.max_bytes)
        old = self.clients.get(sid)
        if old is not None:  # the same client reconnecting: the new socket wins
            old.closing = True
            await old.ws.close(code=WSCloseCode.GOING_AWAY, message=b"replaced by a new connection")
        self.clients[sid] = client
        client.offer(self.status_message(sid), droppable=False)
        for running in (self.running, *self.runs.values()):
            if running is not None and running.client_id == sid:  # reconnecting mid-run: catch up
                for type_, data in running.replay():
                    self._offer(client, dumps({"type": type_, "data": data}), droppable=False)
        client.task = asyncio.get_running_loop().create_task(client.pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    log.debug("websocket %s error: %s", sid, ws.exception())
                elif msg.type == WSMsgType.TEXT and self.on_text is not None:
                    self.on_text(client, msg.data)
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.task.cancel()
        return ws

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            client.closing = True
            await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self.clients.clear()
