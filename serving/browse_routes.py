"""Read-only routes for browsing clients (the storefront, `recsys ui`), over the predictor's served version.

GET /v1/users?limit=N      known users (the ones the served model was trained on) with their profile
GET /v1/users/{user_id}    profile, recent activity (logged events, then training positives), history sizes
GET /v1/items/{item_id}    every item_features column of one item
GET /v1/categories         the catalogue's category paths

Answers: 200 JSON; bad input 400 {"error"}; unknown user or item 404 {"error"}; not ready / database down 503.
The work (a Feast read, a small SQL read) runs in a worker thread, bounded by the model's deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import ORJSONResponse

from recsys import browse
from recsys.contract import CATEGORIES_PATH, ITEMS_PATH, USERS_PATH
from recsys.serving_state import NotReady, ServingState

log = logging.getLogger(__name__)


def browse_router(state: Callable[[], ServingState | None], deadline_s: float) -> APIRouter:
    """The routes; `state()` gives the predictor's ServingState (None until the model is loaded)."""
    router = APIRouter()

    async def answer(lookup: Callable[..., dict[str, Any]], *args: Any) -> ORJSONResponse:
        serving = state()
        if serving is None:
            return ORJSONResponse({"error": "the model is not loaded yet"}, status_code=503)
        try:
            body = await asyncio.wait_for(asyncio.to_thread(lookup, serving, *args), deadline_s)
        except browse.NotFound as exc:
            return ORJSONResponse({"error": str(exc)}, status_code=404)
        except ValueError as exc:
            return ORJSONResponse({"error": str(exc)}, status_code=400)
        except NotReady as exc:
            return ORJSONResponse({"error": f"not ready: {exc}"}, status_code=503)
        except TimeoutError:
            return ORJSONResponse({"error": f"no answer within {deadline_s:g} s"}, status_code=503)
        except Exception:
            log.exception("browse lookup failed")
            return ORJSONResponse({"error": "internal error (see the server log)"}, status_code=500)
        return ORJSONResponse(body)

    @router.get(USERS_PATH)
    async def users(limit: int = Query(default=browse.DEFAULT_USERS)) -> ORJSONResponse:
        return await answer(browse.list_users, limit)

    @router.get(USERS_PATH + "/{user_id}")
    async def user(user_id: str) -> ORJSONResponse:
        return await answer(browse.user_details, user_id)

    @router.get(ITEMS_PATH + "/{item_id}")
    async def item(item_id: str) -> ORJSONResponse:
        return await answer(browse.item_details, item_id)

    @router.get(CATEGORIES_PATH)
    async def categories() -> ORJSONResponse:
        return await answer(browse.category_paths)

    return router
