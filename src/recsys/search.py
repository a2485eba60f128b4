"""Semantic search, similar items and personalised search over the published vectors of the live version.

- search (`SearchRequest` without user_id): the query is embedded with the same MiniLM model that embedded the
  items' name + description (recsys.text), then the nearest text vectors by cosine (TEXT_VECTOR_TABLE).
- similar (`SimilarRequest`): the nearest two-tower item vectors to the given item's own (ITEM_VECTOR_TABLE),
  the item itself excluded ("customers also viewed").
- personalised search (`SearchRequest` with user_id): the text matches re-ranked by
  `(1 - w) * text cosine + w * user-item cosine`, w = SearchSettings.personal_weight (default 0.3: text relevance
  leads, the user's taste reorders among near-equal matches). A user without a vector (unknown, no profile) gets
  plain search, and the response says so: every answer carries `mode` ("search" | "similar" |
  "personalised_search") and the model_version of the vectors it used.

Both vector kinds are retrieved with the strategy the recommendations use (exact in memory up to 500k items,
else HNSW in Postgres; ServingSettings.retrieval), through the serving state's one retriever factory, and
widened by the same helper (retrieval.widen_until_k). Only the availability filter applies (arrived, in
stock): the demographic, history and contextual rules shape recommendations, not answers to an explicit
question. The query encoder loads once per process (`text.get_encoder`, cached); the text vectors of a
version are loaded once, when search first answers over that version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys import schema, text
from recsys.filters import (
    CompiledFilters,
    ContextualConfig,
    DemographicConfig,
    FilterConfig,
    FilterResult,
    HistoryConfig,
    UserFacts,
)
from recsys.item_catalogue import ItemCatalogue
from recsys.recommender import Recommender
from recsys.request_models import RecommendRequest, RequestError, SearchRequest, SimilarRequest
from recsys.response_models import ResponseItem, SearchAnswer, SearchMode, SimilarAnswer, SimilarMode
from recsys.retrieval import ExactRetriever, IndexVersionGone, Retriever, widen_until_k
from recsys.serving_state import NotReady, ServedVersion, ServingState
from recsys.vector_index import queries as vector_queries

MODE_SEARCH: SearchMode = "search"
MODE_PERSONALISED: SearchMode = "personalised_search"
MODE_SIMILAR: SimilarMode = "similar"
# one short query gains nothing from more threads, and under CPU contention spinning threads stall each other
# (measured, 2 busy cores: 36 ms per query on 1 thread, 721 ms on 2)
QUERY_ENCODER_THREADS = 1
# queries are encoded in chunks of about this many characters (~35 ms on one core), each chunk taking its turn in
# arrival order: a request with many long queries cannot hold the encoder while small searches wait
ENCODE_CHUNK_CHARS = 512
AVAILABILITY_ONLY = FilterConfig(
    demographic=DemographicConfig(enabled=False),
    history=HistoryConfig(enabled=False),
    contextual=ContextualConfig(enabled=False),
)


class SearchSettings(BaseSettings):
    """Knobs of search (env prefix RECSYS_SEARCH_)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_SEARCH_", extra="forbid")

    personal_weight: float = Field(
        default=0.3, ge=0, le=1, description="personalised search: weight of the user-item cosine in the blend"
    )
    rerank_candidates: int = Field(
        default=100, ge=1, description="personalised search: text matches re-ranked (at least 4 x k)"
    )


class _Turns:
    """A lock granted in arrival order (a ticket lock): whoever asks again goes to the back of the line."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._serving += 1
                self._changed.notify_all()


_ENCODER_TURNS = _Turns()  # encodings take turns: each sets torch's (process-wide) thread count


def _chunks(queries: Sequence[str], chunk_chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for query in queries:
        if chunk and size + len(query) > chunk_chars:
            yield chunk
            chunk, size = [], 0
        chunk.append(query)
        size += len(query)
    if chunk:
        yield chunk


def encode_queries(queries: Sequence[str], threads: int = QUERY_ENCODER_THREADS) -> np.ndarray:
    """[len(queries), TEXT_EMBEDDING_DIM] unit vectors from the items' MiniLM encoder (loaded once per process).

    Runs on `threads` torch threads and restores the process setting after, one chunk of ENCODE_CHUNK_CHARS at a
    time, each chunk queuing for the encoder behind the chunks of other requests. Queries are not written to the
    on-disk text cache: unlike item texts they are unbounded and rarely repeat.
    """
    if not queries:
        return np.empty((0, schema.TEXT_EMBEDDING_DIM), dtype=np.float32)
    import torch

    encoder = text.get_encoder()
    parts = []
    for chunk in _chunks(queries, ENCODE_CHUNK_CHARS):
        with _ENCODER_TURNS.turn():
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                parts.append(
                    encoder.encode(chunk, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
                )
            finally:
                torch.set_num_threads(previous)
    return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class SearchVersion:
    """What search adds to one ServedVersion: its text retriever and the availability filter."""

    version: ServedVersion
    text_retriever: Retriever
    filters: CompiledFilters

    @property
    def model_version(self) -> str:
        return self.version.model_version


class Searcher:
    """Answers SearchRequest / SimilarRequest over the version the serving state serves (thread-safe).

    The recommender (over the same state) finds the user vectors of personalised searches.
    """

    def __init__(
        self,
        state: ServingState,
        recommender: Recommender,
        settings: SearchSettings | None = None,
        load_encoder: bool = True,
    ):
        if recommender.state is not state:
            raise ValueError("the recommender must serve from the same ServingState")
        self.state = state
        self.recommender = recommender
        self.settings = settings or SearchSettings()
        self._current: SearchVersion | None = None
        self._lock = threading.Lock()
        if load_encoder:
            text.get_encoder()  # at start-up, so the first request does not pay for it

    def answer(
        self,
        requests: Sequence[SearchRequest | SimilarRequest],
        labels: Sequence[str] | None = None,
        query_vectors: np.ndarray | None = None,
    ) -> list[SearchAnswer | SimilarAnswer]:
        """One answer per request, in order.

        `labels` name the requests in errors (default instances[i]); an unknown item_id raises RequestError
        before any work. `query_vectors` (encode_queries of the requests' queries, in order) skips encoding:
        the benchmark times the two halves apart. Raises NotReady when no version is served or the database fails.
        """
        labels = labels if labels is not None else [f"instances[{i}]" for i in range(len(requests))]
        with self.state.answering():
            current = self._search_version()
            self._check_items(current.version.catalogue, requests, labels)
            queries = [r.query for r in requests if isinstance(r, SearchRequest)]
            vectors = encode_queries(queries) if query_vectors is None else query_vectors
            if len(vectors) != len(queries):
                raise ValueError(f"{len(vectors)} query vectors for {len(queries)} queries")
            personal = self._personal_vectors(current, requests)
            answers, next_query = [], iter(vectors)
            for request, user_vector in zip(requests, personal, strict=True):
                if isinstance(request, SimilarRequest):
                    answers.append(self._similar(current, request))
                else:
                    answers.append(self._search(current, request, next(next_query), user_vector))
            return answers

    # ------------------------------------------------------------------------------------------ state
    def _search_version(self) -> SearchVersion:
        served = self.state.current()
        current = self._current
        if current is not None and current.version is served:
            return current
        with self._lock:
            if self._current is None or self._current.version is not served:
                self._current = self._load(served)
            return self._current

    def _load(self, served: ServedVersion) -> SearchVersion:
        catalogue, version = served.catalogue, served.model_version

        def text_matrix() -> np.ndarray:
            with self.state.connection() as conn:
                ids, vectors = vector_queries.load_vectors(conn, version, schema.TEXT_VECTOR_TABLE)
            return _aligned(catalogue, ids, vectors, version)

        retriever = self.state.build_retriever(catalogue, version, schema.TEXT_VECTOR_TABLE, text_matrix)
        return SearchVersion(
            version=served, text_retriever=retriever, filters=CompiledFilters(AVAILABILITY_ONLY, catalogue)
        )

    @staticmethod
    def _check_items(catalogue: ItemCatalogue, requests: Sequence[Any], labels: Sequence[str]) -> None:
        for request, label in zip(requests, labels, strict=True):
            if isinstance(request, SimilarRequest) and request.item_id not in catalogue.position:
                raise RequestError(f"{label}.item_id: unknown item {request.item_id!r}")

    def _personal_vectors(self, current: SearchVersion, requests: Sequence[Any]) -> list[np.ndarray | None]:
        """The user vector of each personalised search (one batched read for all of them), else None."""
        personal = [i for i, r in enumerate(requests) if isinstance(r, SearchRequest) and r.user_id is not None]
        out: list[np.ndarray | None] = [None] * len(requests)
        if personal:
            users = [RecommendRequest(user_id=requests[i].user_id) for i in personal]
            for i, vector in zip(personal, self.recommender.user_vectors(current.version, users), strict=True):
                out[i] = vector
        return out

    # ------------------------------------------------------------------------------------------ modes
    def _search(
        self, current: SearchVersion, request: SearchRequest, query: np.ndarray, user_vector: np.ndarray | None
    ) -> SearchAnswer:
        moment = request.context.moment()
        n = self.state.serving.first_pool(request.k)
        if user_vector is not None:
            n = max(n, self.settings.rerank_candidates)

        def select(rows: np.ndarray, scores: np.ndarray) -> FilterResult:
            if user_vector is not None:
                w = self.settings.personal_weight
                scores = (1 - w) * scores + w * (self._item_vectors(current, rows) @ user_vector)
            return current.filters.apply(rows, scores, UserFacts(), moment)

        result = widen_until_k(current.text_retriever, query, n, request.k, select)
        items, filtered = _shown(current, result, request.k)
        return SearchAnswer(
            mode=MODE_SEARCH if user_vector is None else MODE_PERSONALISED,
            query=request.query,
            user_id=request.user_id,
            model_version=current.model_version,
            items=items,
            filtered=filtered,
        )

    def _similar(self, current: SearchVersion, request: SimilarRequest) -> SimilarAnswer:
        moment = request.context.moment()
        source = current.version.catalogue.position[request.item_id]
        vector = self._item_vectors(current, np.array([source]))[0]

        def select(rows: np.ndarray, scores: np.ndarray) -> FilterResult:
            others = rows != source
            return current.filters.apply(rows[others], scores[others], UserFacts(), moment)

        n = self.state.serving.first_pool(request.k) + 1  # the item itself comes back first
        result = widen_until_k(current.version.retriever, vector, n, request.k, select)
        items, filtered = _shown(current, result, request.k)
        return SimilarAnswer(
            mode=MODE_SIMILAR,
            item_id=request.item_id,
            model_version=current.model_version,
            items=items,
            filtered=filtered,
        )

    def _item_vectors(self, current: SearchVersion, rows: np.ndarray) -> np.ndarray:
        """Two-tower unit vectors of catalogue rows: from memory (exact retrieval) or the item table (HNSW)."""
        retriever = current.version.retriever
        if isinstance(retriever, ExactRetriever):
            return retriever.matrix[rows]
        ids = [str(i) for i in current.version.catalogue.item_ids[rows]]
        with self.state.connection() as conn:
            found = vector_queries.read_vectors(conn, ids, current.model_version, schema.ITEM_VECTOR_TABLE)
        if len(found) < len(set(ids)):
            raise IndexVersionGone(f"item vectors of model_version {current.model_version} are gone")
        vectors = np.stack([found[i] for i in ids])
        # the table may hold vectors that are not unit length; search compares cosines
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _aligned(catalogue: ItemCatalogue, ids: list[str], vectors: np.ndarray, version: str) -> np.ndarray:
    """Text vectors in catalogue row order; the text table must hold exactly the catalogue's items."""
    if not ids:
        raise IndexVersionGone(f"{schema.TEXT_VECTOR_TABLE} holds no rows of model_version {version}")
    rows = [catalogue.position.get(str(item_id), -1) for item_id in ids]
    if len(ids) != len(catalogue) or min(rows) < 0:
        raise NotReady(f"text vectors of model_version {version} do not cover the same items as its item vectors")
    matrix = np.empty((len(catalogue), vectors.shape[1]), dtype=np.float32)
    matrix[rows] = vectors
    return matrix


def _shown(current: SearchVersion, result: FilterResult, k: int) -> tuple[list[ResponseItem], dict[str, int]]:
    """The top k survivors as response items, and what the availability rule removed."""
    items = current.version.catalogue.describe(result.rows[:k], result.scores[:k])
    return items, {"availability": result.removed["availability"]}
