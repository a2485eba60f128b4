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
else HNSW in Postgres; ServingSettings.retrieval). Only the availability filter applies (arrived, in stock):
the demographic, history and contextual rules shape recommendations, not answers to an explicit question.
The query encoder loads once per process (`text.get_encoder`, cached); the text vectors of a version are loaded
once, when the recommender first serves that version.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys import index, schema, text
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
from recsys.recommender import DB_ERRORS, NotReady, Recommender, ServingState
from recsys.request_models import RecommendRequest, RequestError, SearchRequest, SimilarRequest
from recsys.retrieval import ExactRetriever, HnswRetriever, IndexVersionGone, Retriever, choose_strategy

Mode = Literal["search", "similar", "personalised_search"]
MODE_SEARCH: Mode = "search"
MODE_SIMILAR: Mode = "similar"
MODE_PERSONALISED: Mode = "personalised_search"
# one short query gains nothing from more threads, and under CPU contention spinning threads stall each other
# (measured, 2 busy cores: 36 ms per query on 1 thread, 721 ms on 2)
QUERY_ENCODER_THREADS = 1
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


_ENCODE_LOCK = threading.Lock()  # query encodings take turns: each sets torch's (process-wide) thread count


def encode_queries(queries: Sequence[str], threads: int = QUERY_ENCODER_THREADS) -> np.ndarray:
    """[len(queries), TEXT_EMBEDDING_DIM] unit vectors from the items' MiniLM encoder (loaded once per process).

    Runs on `threads` torch threads and restores the process setting after. Queries are not written to the
    on-disk text cache: unlike item texts they are unbounded and rarely repeat.
    """
    if not queries:
        return np.empty((0, schema.TEXT_EMBEDDING_DIM), dtype=np.float32)
    import torch

    encoder = text.get_encoder()
    with _ENCODE_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            vectors = encoder.encode(
                list(queries), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        finally:
            torch.set_num_threads(previous)
    return np.asarray(vectors, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class SearchState:
    """What search adds to one version's ServingState: its text retriever and the availability filter."""

    serving: ServingState
    text_retriever: Retriever
    filters: CompiledFilters

    @property
    def model_version(self) -> str:
        return self.serving.model_version


class Searcher:
    """Answers SearchRequest / SimilarRequest over the version the Recommender serves (thread-safe)."""

    def __init__(self, recommender: Recommender, settings: SearchSettings | None = None, load_encoder: bool = True):
        self.recommender = recommender
        self.settings = settings or SearchSettings()
        self._state: SearchState | None = None
        self._lock = threading.Lock()
        if load_encoder:
            text.get_encoder()  # at start-up, so the first request does not pay for it

    def answer(
        self,
        requests: Sequence[SearchRequest | SimilarRequest],
        labels: Sequence[str] | None = None,
        query_vectors: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """One answer per request, in order.

        `labels` name the requests in errors (default instances[i]); an unknown item_id raises RequestError
        before any work. `query_vectors` (encode_queries of the requests' queries, in order) skips encoding:
        the benchmark times the two halves apart. Raises NotReady when no version is served or the database fails.
        """
        labels = labels if labels is not None else [f"instances[{i}]" for i in range(len(requests))]
        try:
            state = self._current_state()
            self._check_items(state.serving.catalogue, requests, labels)
            queries = [r.query for r in requests if isinstance(r, SearchRequest)]
            vectors = encode_queries(queries) if query_vectors is None else query_vectors
            if len(vectors) != len(queries):
                raise ValueError(f"{len(vectors)} query vectors for {len(queries)} queries")
            personal = self._personal_vectors(state, requests)
            answers, next_query = [], iter(vectors)
            for request, user_vector in zip(requests, personal, strict=True):
                if isinstance(request, SimilarRequest):
                    answers.append(self._similar(state, request))
                else:
                    answers.append(self._search(state, request, next(next_query), user_vector))
            return answers
        except DB_ERRORS as exc:
            raise NotReady(f"database unavailable ({type(exc).__name__})") from None
        except IndexVersionGone:
            raise NotReady("the served model_version is being replaced") from None

    # ------------------------------------------------------------------------------------------ state
    def _current_state(self) -> SearchState:
        serving = self.recommender.serving_state()
        state = self._state
        if state is not None and state.serving is serving:
            return state
        with self._lock:
            if self._state is None or self._state.serving is not serving:
                self._state = self._build_state(serving)
            return self._state

    def _build_state(self, serving: ServingState) -> SearchState:
        catalogue = serving.catalogue
        version = serving.model_version
        retriever: Retriever
        if choose_strategy(self.recommender.serving.retrieval, len(catalogue)) == "exact":
            with self.recommender.pool.connection(timeout=self.recommender.settings.db_timeout_s) as conn:
                ids, vectors = index.load_vectors(conn, version, schema.TEXT_VECTOR_TABLE)
            retriever = ExactRetriever(_aligned(catalogue, ids, vectors, version))
        else:
            retriever = HnswRetriever(
                self.recommender.pool,
                catalogue,
                version,
                self.recommender.serving.hnsw_ef_search,
                table=schema.TEXT_VECTOR_TABLE,
                timeout_s=self.recommender.settings.db_timeout_s,
            )
        return SearchState(
            serving=serving, text_retriever=retriever, filters=CompiledFilters(AVAILABILITY_ONLY, catalogue)
        )

    @staticmethod
    def _check_items(catalogue: ItemCatalogue, requests: Sequence[Any], labels: Sequence[str]) -> None:
        for request, label in zip(requests, labels, strict=True):
            if isinstance(request, SimilarRequest) and request.item_id not in catalogue.position:
                raise RequestError(f"{label}.item_id: unknown item {request.item_id!r}")

    def _personal_vectors(self, state: SearchState, requests: Sequence[Any]) -> list[np.ndarray | None]:
        """The user vector of each personalised search (one batched read for all of them), else None."""
        personal = [i for i, r in enumerate(requests) if isinstance(r, SearchRequest) and r.user_id is not None]
        out: list[np.ndarray | None] = [None] * len(requests)
        if personal:
            users = [RecommendRequest(user_id=requests[i].user_id) for i in personal]
            for i, vector in zip(personal, self.recommender.user_vectors(state.serving, users), strict=True):
                out[i] = vector
        return out

    # ------------------------------------------------------------------------------------------ modes
    def _search(
        self, state: SearchState, request: SearchRequest, query: np.ndarray, user_vector: np.ndarray | None
    ) -> dict[str, Any]:
        k, moment = request.k, request.context.moment()
        n = self._first_pool(k)
        if user_vector is not None:
            n = max(n, self.settings.rerank_candidates)
        while True:
            rows, scores = state.text_retriever.search(query[None, :], n)[0]
            if user_vector is not None:
                item_vectors = self._item_vectors(state, rows)
                w = self.settings.personal_weight
                scores = (1 - w) * scores + w * (item_vectors @ user_vector)
            result = state.filters.apply(rows, scores, UserFacts(), moment)
            if len(result.rows) >= k or n >= state.text_retriever.max_candidates:
                break
            n = min(n * 4, state.text_retriever.max_candidates)
        mode = MODE_SEARCH if user_vector is None else MODE_PERSONALISED
        extra = {"query": request.query, schema.USER_ID: request.user_id}
        return _response(state, mode, extra, result, k)

    def _similar(self, state: SearchState, request: SimilarRequest) -> dict[str, Any]:
        k, moment = request.k, request.context.moment()
        retriever = state.serving.retriever
        source = state.serving.catalogue.position[request.item_id]
        vector = self._item_vectors(state, np.array([source]))[0]
        n = self._first_pool(k) + 1  # the item itself comes back first
        while True:
            rows, scores = retriever.search(vector[None, :], n)[0]
            others = rows != source
            result = state.filters.apply(rows[others], scores[others], UserFacts(), moment)
            if len(result.rows) >= k or n >= retriever.max_candidates:
                break
            n = min(n * 4, retriever.max_candidates)
        return _response(state, MODE_SIMILAR, {schema.ITEM_ID: request.item_id}, result, k)

    def _first_pool(self, k: int) -> int:
        serving = self.recommender.serving
        return max(serving.min_candidates, serving.overfetch * k)

    def _item_vectors(self, state: SearchState, rows: np.ndarray) -> np.ndarray:
        """Two-tower unit vectors of catalogue rows: from memory (exact retrieval) or the item table (HNSW)."""
        retriever = state.serving.retriever
        if isinstance(retriever, ExactRetriever):
            return retriever.matrix[rows]
        ids = [str(i) for i in state.serving.catalogue.item_ids[rows]]
        with self.recommender.pool.connection(timeout=self.recommender.settings.db_timeout_s) as conn:
            found = _read_item_vectors(conn, ids, state.model_version)
        if len(found) < len(set(ids)):
            raise IndexVersionGone(f"item vectors of model_version {state.model_version} are gone")
        return np.stack([found[i] for i in ids]).astype(np.float32)


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


def _read_item_vectors(conn: psycopg.Connection, item_ids: list[str], version: str) -> dict[str, np.ndarray]:
    query = sql.SQL("SELECT {id}, {vec} FROM {t} WHERE {id} = ANY(%s) AND {v} = %s").format(
        id=sql.Identifier(schema.ITEM_ID),
        vec=sql.Identifier(schema.VECTOR_COLUMN),
        t=sql.Identifier(schema.ITEM_VECTOR_TABLE),
        v=sql.Identifier(schema.MODEL_VERSION),
    )
    rows = conn.execute(query, (item_ids, version)).fetchall()
    vectors = {str(item_id): np.asarray(vector.to_numpy(), dtype=np.float32) for item_id, vector in rows}
    # the table may hold vectors that are not unit length; search compares cosines
    return {item_id: v / max(float(np.linalg.norm(v)), 1e-12) for item_id, v in vectors.items()}


def _response(state: SearchState, mode: Mode, extra: dict[str, Any], result: FilterResult, k: int) -> dict[str, Any]:
    items = state.serving.catalogue.describe(result.rows[:k], result.scores[:k])
    return {
        "mode": mode,
        **extra,
        schema.MODEL_VERSION: state.model_version,
        "items": items,
        "filtered": {"availability": result.removed["availability"]},
    }
