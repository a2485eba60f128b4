"""RecommenderModel: the KServe predictor over recsys.serving_state.ServingState (pool, store, live version)
and its request side: recsys.recommender.Recommender and recsys.search.Searcher.

V1 `POST /v1/models/recommender:predict` takes `{"instances": [...]}` (see recsys.request_models) and answers
`{"predictions": [...]}` (recsys.response_models.PredictResponse); V2 `POST /v2/models/recommender/infer` takes
`user_id` (BYTES [n]) and an optional `k` (INT32/INT64, [1] or [n]) and answers `item_id` (BYTES [n, k]) and
`score` (FP32 [n, k]); rows with fewer than k items are padded with "" and 0.0.

Status codes: bad input -> 400 {"error": "<field>: <why>"}; no consistent model version or database down ->
503; anything unexpected -> 500 with a generic message (details only in the server log). predict is async
and hands the blocking Recommender work to worker threads (serving.batching: concurrent requests share one
call), bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InferenceError, InvalidInput, ModelNotReady

from recsys.contract import SERVED_MODEL_NAME
from recsys.recommender import Recommender
from recsys.request_models import MAX_ID_CHARS, MAX_INSTANCES, MAX_K, RecommendRequest, RequestError, parse_instances
from recsys.response_models import Prediction, PredictResponse, Recommendation
from recsys.search import Searcher
from recsys.serving_state import NotReady, ServingState
from serving.batching import MicroBatcher

log = logging.getLogger(__name__)

V2_USER_ID, V2_K, V2_ITEM_ID, V2_SCORE = "user_id", "k", "item_id", "score"
V2_INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
REQUEST_DEADLINE_S = 5.0  # a request still running after this answers 503 (its batch finishes on its own)
BATCH_WORKERS = 2  # threads answering merged batches: one computes while the other waits on the database


def _flat(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return values.reshape(-1).tolist()
    out: list[Any] = []
    for value in values if isinstance(values, list) else [values]:
        out.extend(_flat(value) if isinstance(value, list | np.ndarray) else [value])
    return out


def parse_v2_request(request: InferRequest) -> list[RecommendRequest]:
    """V2 inputs -> RecommendRequests, or RequestError naming the input."""
    inputs = {i.name: i for i in request.inputs}
    unknown = sorted(set(inputs) - {V2_USER_ID, V2_K})
    if unknown:
        raise RequestError(f"inputs.{unknown[0]}: unknown input (expected {V2_USER_ID} and optional {V2_K})")
    if V2_USER_ID not in inputs:
        raise RequestError(f"inputs.{V2_USER_ID}: missing")
    users = inputs[V2_USER_ID]
    if users.datatype != "BYTES":
        raise RequestError(f"inputs.{V2_USER_ID}: datatype must be BYTES, got {users.datatype}")
    ids = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in _flat(users.data)]
    if not ids:
        raise RequestError(f"inputs.{V2_USER_ID}: empty")
    if len(ids) > MAX_INSTANCES:
        raise RequestError(f"inputs.{V2_USER_ID}: at most {MAX_INSTANCES} users per request, got {len(ids)}")
    for i, user_id in enumerate(ids):
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_ID_CHARS:
            raise RequestError(f"inputs.{V2_USER_ID}[{i}]: expected a string of 1..{MAX_ID_CHARS} characters")
    ks = [10] * len(ids)
    if V2_K in inputs:
        k_input = inputs[V2_K]
        if k_input.datatype not in V2_INT_TYPES:
            raise RequestError(f"inputs.{V2_K}: datatype must be an integer type, got {k_input.datatype}")
        values = _flat(k_input.data)
        if len(values) not in (1, len(ids)):
            raise RequestError(f"inputs.{V2_K}: give one k or one per user_id, got {len(values)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_K for v in values):
            raise RequestError(f"inputs.{V2_K}: each k must be an integer in 1..{MAX_K}")
        ks = values * len(ids) if len(values) == 1 else values
    return [RecommendRequest(user_id=user_id, k=k) for user_id, k in zip(ids, ks, strict=True)]


def v2_response(request: InferRequest, model_name: str, predictions: list[Recommendation]) -> InferResponse:
    width = max((len(p["items"]) for p in predictions), default=0)
    item_ids, scores = [], []
    for p in predictions:
        pad = width - len(p["items"])
        item_ids.extend([i["item_id"] for i in p["items"]] + [""] * pad)
        scores.extend([i["score"] for i in p["items"]] + [0.0] * pad)
    shape = [len(predictions), width]
    version = predictions[0]["model_version"] if predictions else None
    return InferResponse(
        response_id=request.id or "",
        model_name=model_name,
        model_version=version,
        infer_outputs=[
            InferOutput(name=V2_ITEM_ID, shape=shape, datatype="BYTES", data=item_ids),
            InferOutput(name=V2_SCORE, shape=shape, datatype="FP32", data=scores),
        ],
    )


class RecommenderModel(Model):
    """The `recommender` model of a KServe ModelServer."""

    def __init__(
        self, name: str = SERVED_MODEL_NAME, model_dir: Path | None = None, deadline_s: float = REQUEST_DEADLINE_S
    ):
        super().__init__(name)
        self.model_dir = model_dir
        self.deadline_s = deadline_s
        self.state: ServingState | None = None
        self.recommender: Recommender | None = None
        self.batcher: MicroBatcher[RecommendRequest] | None = None
        self.searcher: Searcher | None = None  # query / item_id instances (recsys.search)

    def load(self) -> bool:
        """Build the serving state (it keeps retrying the database and the live version in the background) and
        the request side over it.

        `ready` is True once the process is set up; whether requests can be served is `healthy()`.
        """
        if self.state is None:
            self.state = ServingState.from_settings(self.model_dir)
            self.recommender = Recommender(self.state)
            self.batcher = MicroBatcher(self.recommender.recommend, workers=BATCH_WORKERS, max_instances=MAX_INSTANCES)
        if self.searcher is None:
            self.searcher = Searcher(self.state, self.recommender)  # loads the query encoder once, here
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        return self.state is not None and self.state.ready()

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None
        if self.state is not None:
            self.state.close()
            self.state = None
            self.recommender = None
            self.searcher = None
            log.info("predictor stopped: database pool closed")
        self.ready = False

    def validate(self, payload: Any) -> Any:
        """Validation happens in predict (parse_instances / parse_v2_request), with field-naming messages."""
        return payload

    async def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None
    ) -> PredictResponse | InferResponse:
        try:
            requests = parse_v2_request(payload) if isinstance(payload, InferRequest) else parse_instances(payload)
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None
        predictions = await self._recommend(requests)
        if isinstance(payload, InferRequest):
            return v2_response(payload, self.name, predictions)  # V2 carries only recommendations
        return PredictResponse(predictions=predictions)

    async def _recommend(self, requests: list[Any]) -> list[Prediction]:
        if self.recommender is None or self.searcher is None or self.batcher is None:
            raise ModelNotReady(self.name)
        try:
            return await asyncio.wait_for(self._answer(self.searcher, self.batcher, requests), self.deadline_s)
        except RequestError as exc:  # e.g. an unknown item_id, known only once the catalogue is consulted
            raise InvalidInput(str(exc)) from None
        except NotReady as exc:
            raise ModelNotReady(self.name, str(exc)) from None
        except TimeoutError:
            raise ModelNotReady(self.name, f"no answer within {self.deadline_s:g} s") from None
        except Exception:
            log.exception("recommendation failed")
            raise InferenceError("internal error while recommending (see the server log)") from None

    @staticmethod
    async def _answer(
        searcher: Searcher, batcher: MicroBatcher[RecommendRequest], requests: list[Any]
    ) -> list[Prediction]:
        """Recommendations and searches of one call, in instance order; searches first (they may reject an item_id).

        Recommendations go through the micro-batcher (merged with other calls' recommendations); searches run in
        their own worker thread, so one call's bad item_id never fails another call.
        """
        searches = [i for i, r in enumerate(requests) if not isinstance(r, RecommendRequest)]
        recommends = [i for i, r in enumerate(requests) if isinstance(r, RecommendRequest)]
        out: dict[int, Prediction] = {}
        if searches:
            labels = [f"instances[{i}]" for i in searches]
            answers = await asyncio.to_thread(searcher.answer, [requests[i] for i in searches], labels=labels)
            for i, answer in zip(searches, answers, strict=True):
                out[i] = answer
        if recommends:
            answers = await batcher.submit([requests[i] for i in recommends])
            for i, answer in zip(recommends, answers, strict=True):
                out[i] = answer
        return [out[i] for i in range(len(requests))]
