"""RecommenderModel: the KServe predictor over recsys.serving_state.ServingState (pool, store, live version)
and its request side: recsys.recommender.Recommender and recsys.search.Searcher.

V1 `POST /v1/models/recommender:predict` takes `{"instances": [...]}` (see recsys.request_models) and answers
`{"predictions": [...]}` (recsys.response_models.PredictResponse); V2 `POST /v2/models/recommender/infer` is
parsed and answered by serving.v2.

Status codes: bad input -> 400 {"error": "<field>: <why>"}; no consistent model version or database down ->
503; anything unexpected -> 500 with a generic message (details only in the server log). predict is async
and hands the blocking Recommender work to worker threads (serving.batching: concurrent requests share one
call), bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from kserve import InferRequest, InferResponse, Model
from kserve.errors import InferenceError, InvalidInput, ModelNotReady

from recsys import metrics
from recsys.contract import SERVED_MODEL_NAME
from recsys.recommender import SOURCE_POPULARITY, Recommender
from recsys.request_models import (
    MAX_INSTANCES,
    RecommendRequest,
    RequestError,
    SearchRequest,
    SimilarRequest,
    parse_instances,
)
from recsys.response_models import Prediction, PredictResponse
from recsys.search import Searcher
from recsys.serving_state import NotReady, QueryFailed, ServingState
from serving.batching import MicroBatcher
from serving.v2 import parse_v2_request, v2_response

log = logging.getLogger(__name__)

REQUEST_DEADLINE_S = 5.0  # a request still running after this answers 503 (its batch finishes on its own)
# threads answering merged batches. One: requests arriving while it works all join its next batch (fewer fixed
# Feast + history reads per request, fewer GIL hand-offs). Measured at 16 clients, 10k items, busy 2-core machine
# (issue 13): 1 thread 588-703 req/s, p99 47 ms; 2 threads 395-468 req/s, p99 54-83 ms.
BATCH_WORKERS = 1


def shared_by_the_batch(exc: Exception) -> bool:
    """A failure that every member of a merged batch would meet alone too: no served version, or the database down.
    Anything else (a query the database rejected, a bug one member's input triggers) is retried member by member."""
    return isinstance(exc, NotReady) and not isinstance(exc, QueryFailed)


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

    def __getstate__(self) -> dict[str, Any]:
        """KServe pickles the model into each worker process it spawns (`--workers N`): the pool, threads and
        encoder stay behind, and `load()` builds that worker's own."""
        return {**self.__dict__, "state": None, "recommender": None, "batcher": None, "searcher": None}

    def load(self) -> bool:
        """Build the serving state (it keeps retrying the database and the live version in the background) and
        the request side over it.

        `ready` is True once the process is set up; whether requests can be served is `healthy()`.
        """
        if self.state is None:
            self.state = ServingState.from_settings(self.model_dir)
            self.recommender = Recommender(self.state)
            self.batcher = MicroBatcher(
                self.recommender.recommend,
                workers=BATCH_WORKERS,
                max_instances=MAX_INSTANCES,
                shared_failure=shared_by_the_batch,
                on_batch=metrics.BATCH_SIZE.observe,
            )
            state = self.state
            metrics.SERVED_VERSION.watch(lambda: state.model_version, state.ready)
        if self.searcher is None:
            self.searcher = Searcher(self.state, self.recommender)  # loads the query encoder once, here
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """None when the live version is served with the database up; else why not (readiness says it)."""
        if self.state is None:
            return "the predictor is not loaded"
        return self.state.not_ready_reason()

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
        started, kind, status = time.perf_counter(), "invalid", "500"
        try:
            try:
                requests = parse_v2_request(payload) if isinstance(payload, InferRequest) else parse_instances(payload)
            except RequestError as exc:
                raise InvalidInput(str(exc)) from None
            kind = _kind(requests)
            predictions = await self._recommend(requests)
            status = "200"
        except InvalidInput:
            status = "400"
            raise
        except ModelNotReady:
            status = "503"
            raise
        finally:
            metrics.REQUESTS.labels(kind, status).inc()
            metrics.REQUEST_SECONDS.labels(kind).observe(time.perf_counter() - started)
        _count_outcomes(predictions)
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


def _kind(requests: list[Any]) -> str:
    """recommend | search | similar, or mixed when one call holds instances of several kinds (metrics label)."""
    kinds = {
        "search" if isinstance(r, SearchRequest) else "similar" if isinstance(r, SimilarRequest) else "recommend"
        for r in requests
    }
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _count_outcomes(predictions: list[Prediction]) -> None:
    for prediction in predictions:
        if prediction.get("cold_start"):
            metrics.COLD_STARTS.inc()
        if prediction.get("source") == SOURCE_POPULARITY:
            metrics.POPULARITY_FALLBACKS.inc()
        for rule, removed in prediction["filtered"].items():
            if removed:
                metrics.CANDIDATES_REMOVED.labels(rule).inc(removed)
