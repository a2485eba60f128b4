"""Everything the predictor adds to KServe's HTTP app, in one place: `register_routes`.

KServe's ModelServer serves the model protocols itself (V1 `/v1/models/<name>:predict`, V2
`/v2/models/<name>/infer`, readiness and health) and maps kserve.errors to status codes (InvalidInput 400,
ModelNotReady 503, InferenceError 500). Our own routes (e.g. `POST /v1/events`) and handlers are added here,
and only here: serving.server.set_up_predictor calls `register_routes` in every serving process before it
serves (with `--workers N` KServe spawns each worker fresh, so registering once in the parent would not do).
"""

from __future__ import annotations

import warnings

from fastapi import FastAPI, Request
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import ORJSONResponse

from recsys.serving_state import ServingSettings
from serving.browse_routes import browse_router
from serving.events import add_events_route
from serving.json_body import JsonBodyByDefault
from serving.limits import BodySizeLimit
from serving.model import RecommenderModel
from serving.model_routes import add_model_routes


def register_routes(app: FastAPI, model: RecommenderModel) -> None:
    """Add the predictor's own routes and error handlers to KServe's app (`kserve.model_server.app`)."""
    add_request_handling(app)
    add_model_routes(app, model)  # readiness with its reason, 405 on the inference paths (serving/model_routes.py)
    add_events_route(app)  # POST /v1/events (serving/events.py)
    # GET /v1/users, /v1/users/{id}, /v1/items/{id}, /v1/categories over the model's served version
    app.include_router(browse_router(lambda: model.state, model.deadline_s))


def add_request_handling(app: FastAPI) -> None:
    """The middleware and handlers every request passes (bench/noop_predictor.py serves its no-op behind them too)."""
    # KServe answers through ORJSONResponse, which FastAPI now deprecates on every request: nothing to act on here
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)
    app.add_exception_handler(RequestValidationError, bad_request_body)
    app.add_middleware(BodySizeLimit, max_bytes=ServingSettings().max_body_bytes)  # 413 (serving/limits.py)
    app.add_middleware(JsonBodyByDefault)  # `curl -d` without -H Content-Type works (serving/json_body.py)


async def bad_request_body(_: Request, exc: RequestValidationError) -> ORJSONResponse:
    """FastAPI's body validation (V2 JSON) answers 400 {"error": ...} like every other bad input."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return ORJSONResponse(status_code=400, content={"error": f"{where}: {first.get('msg', 'invalid request')}"})
