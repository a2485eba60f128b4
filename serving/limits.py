"""A request-body size cap for the whole predictor app: 413 before a large body is held in memory.

An ASGI middleware (the outermost of ours), so it covers KServe's own routes too: a declared Content-Length over
the cap is refused at once, and a body streamed without one is counted as it arrives and refused as soon as it
passes the cap. Bodies under the cap are read here once and handed on unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from recsys import metrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# after refusing a body, this much more of it is read and dropped so that the client, still sending, gets to read
# the 413 instead of a reset connection; a longer body is cut off
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413 {"error": ...}."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, already=0)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, already=size, more=message.get("more_body", False))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:
                return await receive()  # e.g. http.disconnect
            handed_on = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, already: int, more: bool = True) -> None:
        log.info("413 %s %s: body over %d bytes", scope.get("method"), scope.get("path"), self.max_bytes)
        metrics.BODIES_REFUSED.inc()
        while more and already < DRAIN_LIMIT_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            already += len(message.get("body", b""))
            more = message.get("more_body", False)
        content = orjson.dumps({"error": f"body: larger than {self.max_bytes} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
