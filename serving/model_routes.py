"""Routes of ours that sit in front of KServe's for the `recommender` model (registered first, so they win).

- Readiness (`GET /v1/models/recommender`, `GET /v2/models/recommender/ready`): 200 `{"name", "ready": true}`
  only while the live model_version is served with the database up; else 503 with the reason in `error`
  (database unavailable, no version live yet, the live version missing from / broken in the model dir).
  KServe's own readiness says only "not ready" and logs a traceback per probe.
- A wrong method on the inference paths answers 405 with `Allow: POST` (KServe routes `GET
  /v1/models/<name>:predict` to the model-status route, which answered 404).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from serving.model import RecommenderModel

INFERENCE_PATHS = ("/v1/models/{model_name}:predict", "/v2/models/{model_name}/infer")
OTHER_METHODS = ["GET", "PUT", "PATCH", "DELETE"]


def add_model_routes(app: FastAPI, model: RecommenderModel) -> None:
    async def readiness() -> ORJSONResponse:
        reason = model.not_ready_reason()
        if reason is None:
            return ORJSONResponse({"name": model.name, "ready": True})
        return ORJSONResponse(status_code=503, content={"error": reason, "name": model.name, "ready": False})

    async def method_not_allowed() -> ORJSONResponse:
        return ORJSONResponse(
            status_code=405, content={"error": "method not allowed: use POST"}, headers={"Allow": "POST"}
        )

    app.add_api_route(f"/v1/models/{model.name}", readiness, methods=["GET"])
    app.add_api_route(f"/v2/models/{model.name}/ready", readiness, methods=["GET"])
    for path in INFERENCE_PATHS:
        app.add_api_route(path, method_not_allowed, methods=OTHER_METHODS)
