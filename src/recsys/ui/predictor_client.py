"""The storefront's only way to the recommender: HTTP calls to the predictor (V1 predict, the read-only
storefront routes, /v1/events). It never touches the database or the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from recsys.contract import MODEL_STATUS_PATH, PREDICT_PATH

DEFAULT_TIMEOUT_S = 10.0


class PredictorError(RuntimeError):
    """The predictor answered with an error, or could not be reached (status 502 then)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CallTimer:
    """Wall time spent waiting on the predictor during one UI request (reported as a Server-Timing header)."""

    seconds: float = 0.0
    calls: int = 0
    statuses: list[int] = field(default_factory=list)

    def header(self) -> str:
        return f'predictor;dur={self.seconds * 1000:.1f};desc="{self.calls} call(s)"'


class PredictorClient:
    """Async calls to one predictor base URL; errors become PredictorError with the predictor's own message."""

    def __init__(
        self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, timer: CallTimer | None = None, **kwargs: Any) -> httpx.Response:
        """One call; raises PredictorError(502) when the predictor cannot be reached."""
        started = time.perf_counter()
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PredictorError(
                502, f"the predictor at {self.base_url} did not answer ({type(exc).__name__})"
            ) from None
        finally:
            if timer is not None:
                timer.seconds += time.perf_counter() - started
                timer.calls += 1
        if timer is not None:
            timer.statuses.append(response.status_code)
        return response

    async def json(self, method: str, path: str, timer: CallTimer | None = None, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer; any other status raises PredictorError with the predictor's message."""
        response = await self.request(method, path, timer, **kwargs)
        if response.is_success:
            return response.json()
        raise PredictorError(response.status_code, error_message(response))

    async def predict_one(self, instance: dict[str, Any], timer: CallTimer | None = None) -> dict[str, Any]:
        body = await self.json("POST", PREDICT_PATH, timer, json={"instances": [instance]})
        return body["predictions"][0]

    async def ready(self) -> bool:
        try:
            return (await self.request("GET", MODEL_STATUS_PATH)).status_code == 200
        except PredictorError:
            return False


def error_message(response: httpx.Response) -> str:
    """The predictor's {"error": ...} (KServe's {"detail": ...}) or a short status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return f"the predictor answered HTTP {response.status_code}"
