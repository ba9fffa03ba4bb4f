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

from .jobs import dumps

log = logging.getLogger("sumie.ws")

_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


class SendBuffer:
    """Messages waiting for one socket. Full: a preview is dropped (the oldest queued one first, to make
    room for text); when only text is queued, `offer` says no and the caller closes the socket."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[tuple[str | bytes, bool]] = deque()
        self.dropped_previews = 0

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, message: str | bytes, *, droppable: bool) -> bool:
        items = self.items
        if len(items) >= self.capacity:
            if droppable:
                self.dropped_previews += 1
                return True
            for i, (_, can_drop) in enumerate(items):
                if can_drop:
                    del items[i]
                    self.dropped_previews += 1
                    break
            else:
                return False
        items.append((message, droppable))
        return True

    def pop(self) -> str | bytes:
        return self.items.popleft()[0]

    def clear(self) -> None:
        self.items.clear()


class Client:
    """One connected socket and its outgoing buffer, drained by its own task."""

    def __init__(self, sid: str, ws: web.WebSocketResponse, capacity: int) -> None:
        self.sid = sid
        self.ws = ws
        self.buffer = SendBuffer(capacity)
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
                 on_connect: Callable[[Client], None] | None = None) -> None:
        self.capacity = capacity
        self.clients: dict[str, Client] = {}
        self.queue_remaining = queue_remaining
        self.on_connect = on_connect
        self.on_text: Callable[[Client, str], None] | None = None  # text a client sends (feature flags)
        self.scope_sid: Callable[[web.Request, str], str] | None = None

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
            log.warning("websocket %s is too slow (%d messages waiting): closing it", client.sid, len(client.buffer))
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
        client = Client(sid, ws, self.capacity)
        old = self.clients.get(sid)
        if old is not None:  # the same client reconnecting: the new socket wins
            old.closing = True
            await old.ws.close(code=WSCloseCode.GOING_AWAY, message=b"replaced by a new connection")
        self.clients[sid] = client
        client.offer(self.status_message(sid), droppable=False)
        if self.on_connect is not None:
            self.on_connect(client)
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
