"""`POST /v1/events` on the predictor's port: user events in, `{"accepted": n, "duplicates": m}` out.

200 only after the batch is committed (log + history, one transaction: recsys.events.log); 400
`{"error", "index", "field"}` when any event is invalid (nothing written); 413 over MAX_BODY_BYTES; 503 when
the database (or a published catalogue) is not there or does not answer within the deadline — nothing is
lost then that a retry with the same event_ids would not bring back, and a retry never writes a row twice.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from recsys.contract import EVENTS_PATH
from recsys.events.contract import MAX_BODY_BYTES, EventError
from recsys.events.ingest import UNAVAILABLE, EventIngest
from recsys.events.log import NoCatalogue

log = logging.getLogger(__name__)

EVENTS_DEADLINE_S = 5.0  # a call still running after this answers 503 (its transaction commits or not on its own)


class EventsEndpoint:
    """The route handler; one per process, holding the ingest (its pool opens on first use in each worker)."""

    def __init__(self, ingest: EventIngest, deadline_s: float = EVENTS_DEADLINE_S):
        self.ingest = ingest
        self.deadline_s = deadline_s
        self._unavailable = False

    async def __call__(self, request: Request) -> ORJSONResponse:
        body = await _read_at_most(request, MAX_BODY_BYTES)
        if body is None:
            return _error(413, f"body: larger than {MAX_BODY_BYTES} bytes (send at most 1000 events per call)")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body: invalid JSON ({exc})")
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self.ingest.ingest, payload), self.deadline_s)
        except EventError as exc:
            log.info("events rejected: %s", exc)
            return ORJSONResponse(status_code=400, content={"error": str(exc), "index": exc.index, "field": exc.field})
        except NoCatalogue as exc:
            return _error(503, str(exc))
        except UNAVAILABLE as exc:
            if not self._unavailable:
                log.warning("event store unavailable: %s", type(exc).__name__)
            self._unavailable = True
            return _error(503, "the event store is unavailable; retrying with the same event_ids is safe")
        except TimeoutError:
            return _error(503, f"not committed within {self.deadline_s:g} s; retrying with the same event_ids is safe")
        if self._unavailable:
            log.info("event store available")
            self._unavailable = False
        return ORJSONResponse(result.as_response())


async def _read_at_most(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds `limit` (checked on Content-Length first, then while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> ORJSONResponse:
    return ORJSONResponse(status_code=status, content={"error": message})


def add_events_route(app: FastAPI, ingest: EventIngest | None = None) -> EventsEndpoint:
    """Mount POST EVENTS_PATH; the ingest's connections close when the server shuts down."""
    endpoint = EventsEndpoint(ingest or EventIngest.pooled())

    async def post_events(request: Request) -> ORJSONResponse:
        return await endpoint(request)

    app.add_api_route(EVENTS_PATH, post_events, methods=["POST"])
    app.router.on_shutdown.append(endpoint.ingest.close)
    return endpoint
