"""serving.json_body: `curl -d '{...}'` (form-urlencoded, or no Content-Type) reaches the predictor as JSON."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serving.json_body import JsonBodyByDefault

pytestmark = pytest.mark.unit


class Body(BaseModel):
    instances: list[dict]


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        return {"content_type": request.headers["content-type"], "body": await request.json()}

    @app.post("/model")
    async def model(body: Body) -> dict:  # FastAPI parses a model body only when it is declared JSON
        return {"n": len(body.instances)}

    app.add_middleware(JsonBodyByDefault)
    return app


@pytest.mark.parametrize(
    "headers", [{"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}]
)
def test_a_json_body_without_a_json_content_type_is_read_as_json(headers: dict[str, str]) -> None:
    client = TestClient(echo_app())
    payload = '{"instances": [{"user_id": "u00001"}]}'
    answer = client.post("/raw", content=payload, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"content_type": "application/json", "body": {"instances": [{"user_id": "u00001"}]}}
    assert client.post("/model", content=payload, headers=headers).json() == {"n": 1}


def test_other_declared_types_are_left_alone() -> None:
    app = echo_app()

    @app.post("/type")
    async def declared(request: Request) -> dict:
        return {"content_type": request.headers["content-type"]}

    answer = TestClient(app).post("/type", content=b"\x00", headers={"Content-Type": "application/octet-stream"})
    assert answer.json() == {"content_type": "application/octet-stream"}
