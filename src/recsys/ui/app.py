"""The storefront's HTTP app: the static page, its pictures, and a small JSON API that forwards to the predictor.

Routes (the page's JavaScript only calls these, so the browser talks to one origin):
- `GET /` the page (`/?user_id=U` opens that shopper, `/?item_id=I` an item, `/?q=...` a search);
- `GET /api/users`, `GET /api/users/{user_id}`, `GET /api/categories` -> the predictor's read-only routes;
- `POST /api/recommend` (a V1 instance: user_id or user, k, context), `POST /api/search` (query, user_id, k),
  `GET /api/items/{item_id}` (details + similar items) -> V1 predict;
- `POST /api/events` {user_id, item_id, interaction_type} -> the predictor's `POST /v1/events` with a fresh
  event_id; a predictor without that route answers `{"available": false}` (HTTP 200, so the page can say so);
- `GET /images/...` the files of `recsys images` under the images folder, `GET /placeholder.svg` the fallback.
Every item the API returns carries `image_url` (see recsys.ui.media). Each API answer has a `Server-Timing`
header with the time spent waiting on the predictor, so the page's own cost can be measured apart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from recsys import schema
from recsys.contract import CATEGORIES_PATH, EVENTS_PATH, ITEMS_PATH, USERS_PATH
from recsys.ui.media import IMAGES_ROUTE, PLACEHOLDER_ROUTE, image_path_under, image_url, placeholder_svg
from recsys.ui.predictor_client import (
    CallTimer,
    PredictorClient,
    PredictorError,
    error_message,
)

STATIC_DIR = Path(__file__).with_name("static")
EVENT_TYPES = (schema.POSITIVE_VIEW, schema.CART, schema.PURCHASE)
SIMILAR_K = 8
MAX_BODY_BYTES = 64 * 1024
# the page's scripts, styles and (unless remote images are allowed) pictures all come from this server
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self'{remote}; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class UiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    predictor_url: str,
    images_dir: Path | None = None,
    remote_images: bool = False,
    client: PredictorClient | None = None,
) -> FastAPI:
    """The storefront app for one predictor. `images_dir`: the folder `recsys images` wrote (None: placeholders);
    `remote_images`: show img_links that are http(s) URLs (off: the page then loads nothing from elsewhere)."""
    predictor = client or PredictorClient(predictor_url)
    policy = CONTENT_SECURITY_POLICY.format(remote=" https: http:" if remote_images else "")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await predictor.close()

    app = FastAPI(title="recsys storefront", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def pictures(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            item["image_url"] = image_url(
                item.get(schema.IMG_LINK),
                images_dir,
                str(item.get(schema.CATEGORY) or ""),
                str(item.get(schema.PRODUCT_NAME) or ""),
                remote_images,
            )
        return items

    def answer(content: Any, timer: CallTimer) -> JSONResponse:
        return JSONResponse(content, headers={"Server-Timing": timer.header(), "Cache-Control": "no-store"})

    @app.middleware("http")
    async def headers_and_limits(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"body: at most {MAX_BODY_BYTES} bytes"}, status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(PredictorError)
    async def predictor_failed(_: Request, exc: PredictorError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(UiError)
    async def bad_request(_: Request, exc: UiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True, "predictor_ready": await predictor.ready()}

    @app.get(PLACEHOLDER_ROUTE, include_in_schema=False)
    async def placeholder(category: str = "", name: str = "") -> Response:
        return Response(
            placeholder_svg(category, name), media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    @app.get(IMAGES_ROUTE + "/{path:path}", include_in_schema=False)
    async def image(path: str) -> Response:
        relative = image_path_under(Path(path), images_dir) if images_dir is not None else None
        if relative is None or Path(path).is_absolute():
            return Response(status_code=404)
        return FileResponse(images_dir / relative, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/users")
    async def users(limit: int = 100) -> JSONResponse:
        timer = CallTimer()
        return answer(await predictor.json("GET", USERS_PATH, timer, params={"limit": limit}), timer)

    @app.get("/api/users/{user_id}")
    async def user(user_id: str) -> JSONResponse:
        timer = CallTimer()
        body = await predictor.json("GET", f"{USERS_PATH}/{quote(user_id, safe='')}", timer)
        for key in ("recent", "purchased", "carted", "viewed"):
            pictures(body.get(key) or [])
        return answer(body, timer)

    @app.get("/api/categories")
    async def categories() -> JSONResponse:
        timer = CallTimer()
        return answer(await predictor.json("GET", CATEGORIES_PATH, timer), timer)

    @app.post("/api/recommend")
    async def recommend(request: Request) -> JSONResponse:
        instance = await json_object(request)
        timer = CallTimer()
        prediction = await predictor.predict_one(instance, timer)
        pictures(prediction["items"])
        return answer(prediction, timer)

    @app.post("/api/search")
    async def search(request: Request) -> JSONResponse:
        instance = await json_object(request)
        if "query" not in instance:
            raise UiError(400, "query: missing")
        timer = CallTimer()
        prediction = await predictor.predict_one(instance, timer)
        pictures(prediction["items"])
        return answer(prediction, timer)

    @app.get("/api/items/{item_id}")
    async def item(item_id: str, timestamp: str | None = None) -> JSONResponse:
        timer = CallTimer()
        similar: dict[str, Any] = {schema.ITEM_ID: item_id, "k": SIMILAR_K}
        if timestamp:
            similar["context"] = {"timestamp": timestamp}
        details, neighbours = await asyncio.gather(
            predictor.json("GET", f"{ITEMS_PATH}/{quote(item_id, safe='')}", timer),
            predictor.predict_one(similar, timer),
        )
        pictures([details])
        pictures(neighbours["items"])
        return answer({"item": details, "similar": neighbours}, timer)

    @app.post("/api/events")
    async def events(request: Request) -> JSONResponse:
        body = await json_object(request)
        event = event_from(body)
        timer = CallTimer()
        response = await predictor.request("POST", EVENTS_PATH, timer, json={"events": [event]})
        if response.status_code in (404, 405):
            message = "events are not available: this predictor has no POST /v1/events"
            return answer({"available": False, "accepted": 0, "message": message}, timer)
        if not response.is_success:
            raise PredictorError(response.status_code, error_message(response))
        return answer({"available": True, **response.json(), "event_id": event["event_id"]}, timer)

    return app


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise UiError(400, "body: expected a JSON object") from None
    if not isinstance(body, dict):
        raise UiError(400, "body: expected a JSON object")
    return body


def event_from(body: dict[str, Any]) -> dict[str, Any]:
    """A /v1/events event from the page's {user_id, item_id, interaction_type}: a fresh id, the time now."""
    for key in (schema.USER_ID, schema.ITEM_ID, schema.INTERACTION_TYPE):
        if not isinstance(body.get(key), str) or not body[key]:
            raise UiError(400, f"{key}: expected a non-empty string")
    if body[schema.INTERACTION_TYPE] not in EVENT_TYPES:
        raise UiError(400, f"{schema.INTERACTION_TYPE}: one of {', '.join(EVENT_TYPES)}")
    return {
        "event_id": f"ui-{uuid.uuid4()}",
        schema.USER_ID: body[schema.USER_ID],
        schema.ITEM_ID: body[schema.ITEM_ID],
        schema.INTERACTION_TYPE: body[schema.INTERACTION_TYPE],
        schema.TIMESTAMP: datetime.now(UTC).isoformat(),
    }
