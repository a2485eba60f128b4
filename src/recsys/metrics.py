"""Prometheus metrics of the online path, in the process-wide prometheus_client registry.

The predictor exposes them on `GET /metrics` (KServe's route serves that registry, next to KServe's own
request_*_seconds histograms); serving/README.md lists them. Counters are bumped where the thing happens:
the request side (serving/model.py) for requests, cold starts, fallbacks and filters, recsys.retrieval for
widening rounds, the micro-batcher for batch sizes; the served version is read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "recsys_requests", "Predictor requests by kind and HTTP status", ["kind", "status"]
)  # kind: recommend | search | similar | mixed (instances of several kinds) | v2
REQUEST_SECONDS = Histogram(
    "recsys_request_seconds",
    "Time to answer a predict/infer call (validation to response)",
    ["kind"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
COLD_STARTS = Counter("recsys_cold_starts", "Recommendations for users the model has no history for")
POPULARITY_FALLBACKS = Counter(
    "recsys_popularity_fallbacks", "Recommendations answered by popularity (no user vector could be made)"
)
CANDIDATES_REMOVED = Counter(
    "recsys_candidates_removed", "Retrieved candidates removed, by filter rule", ["filter"]
)  # availability | demographic | history | contextual
WIDENING_ROUNDS = Counter(
    "recsys_widening_rounds", "Extra retrieval rounds because fewer than k candidates survived the filters"
)
BATCH_SIZE = Histogram(
    "recsys_batch_instances",
    "Recommendation instances per merged Recommender call (micro-batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
BODIES_REFUSED = Counter("recsys_bodies_refused", "Request bodies refused (413) for exceeding the size cap")


class ServedVersionCollector(Collector):
    """`recsys_model_version{model_version="..."} 1` for the version being served, and `recsys_ready` 0/1, read
    at scrape time from the callables given to `watch` (the predictor's; the last one watched wins)."""

    def __init__(self) -> None:
        self._model_version: Callable[[], str | None] = lambda: None
        self._ready: Callable[[], bool] = lambda: False

    def watch(self, model_version: Callable[[], str | None], ready: Callable[[], bool]) -> None:
        self._model_version, self._ready = model_version, ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        version = GaugeMetricFamily(
            "recsys_model_version", "The model_version being served (value 1)", labels=["model_version"]
        )
        served = self._model_version()
        if served is not None:
            version.add_metric([served], 1)
        yield version
        yield GaugeMetricFamily("recsys_ready", "1 when the live version is served with the database up", self._ready())


SERVED_VERSION = ServedVersionCollector()
REGISTRY.register(SERVED_VERSION)
