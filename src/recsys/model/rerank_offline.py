"""The rerank stage offline: the two-tower's candidates per user, the served model's score matrix that the
metrics read, and the history weighting and blend weight chosen on the validation part.

Offline, a user's history for the item-item part is their training positives ordered by time (as
inputs.recent_positive_items orders them; online the recommender passes the user's items oldest first too).
For the test part it stays the training positives, as for the towers and the EASE row: adding the validation
items would give the served model information the baselines it is compared with do not get.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys import schema
from recsys.contract import RERANK_CANDIDATES
from recsys.model.dataset import interaction_codes, positive_mask
from recsys.model.rerank import (
    EASE_MAX_ITEMS,
    NEIGHBOURS,
    ItemItemReranker,
    blend,
    item_item_weights,
    recency_weights,
)

# blend weights tried on validation; 0 keeps the two-tower's order (when the item-item part does not help)
BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
# history half-lives (in items) tried on validation; None weighs every history item alike
HALF_LIVES = (None, 5.0, 20.0)
# the blend is chosen on validation NDCG@10: the metric issue 12's bar (served model >= EASE) is set on
SELECTION_METRIC = "ndcg@10"

HistoryFor = Callable[[float | None], sp.csr_matrix]  # half-life -> [users, n_items] history weights


def history_matrix(
    train: pd.DataFrame, user_index: pd.Index, item_index: pd.Index, user_rows: np.ndarray, half_life: float | None
) -> sp.csr_matrix:
    """[len(user_rows), len(item_index)]: each user's training positives, weighted by recency_weights (the
    newest occurrence of a repeated item counts), exactly as ItemItemReranker.score weighs a history."""
    positives = train[positive_mask(train)].sort_values([schema.USER_ID, schema.TIMESTAMP], kind="stable")
    positives = positives.drop_duplicates([schema.USER_ID, schema.ITEM_ID], keep="last")
    rows, cols = interaction_codes(positives, user_index, item_index)
    ages = positives.groupby(schema.USER_ID, sort=False).cumcount(ascending=False).to_numpy()
    weights = recency_weights(int(ages.max()) + 1 if ages.size else 0, half_life)[::-1][ages]  # by age
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=(len(user_index), len(item_index)), dtype=np.float32)
    return matrix[user_rows]


def top_candidates(
    scores: np.ndarray, exclude: Sequence[np.ndarray], n_candidates: int = RERANK_CANDIDATES
) -> np.ndarray:
    """[users, n]: each user's n best-scored item columns, their `exclude` items left out (unordered)."""
    masked = np.array(scores, dtype=np.float32)
    for row, items in enumerate(exclude):
        masked[row, items] = -np.inf
    n_candidates = min(n_candidates, masked.shape[1])
    return np.argpartition(-masked, n_candidates - 1, axis=1)[:, :n_candidates]


def reranked_scores(
    reranker: ItemItemReranker,
    scores: np.ndarray,
    exclude: Sequence[np.ndarray],
    history: sp.csr_matrix,
    n_candidates: int = RERANK_CANDIDATES,
) -> np.ndarray:
    """The served model's [users, n_items] scores: each user's top `n_candidates` two-tower items (their
    `exclude` items left out) carry the blended score, every other item -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    candidates = top_candidates(scores, exclude, n_candidates)
    blended = reranker.score_batch(candidates, np.take_along_axis(scores, candidates, axis=1), history)
    return _on_candidates(candidates, blended, scores.shape)


def _on_candidates(candidates: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    served = np.full(shape, -np.inf, dtype=np.float32)
    np.put_along_axis(served, candidates, values, axis=1)
    return served


def fit_reranker(
    train_matrix: sp.csr_matrix,
    ease_lambda: float,
    valid_scores: np.ndarray,
    valid_exclude: Sequence[np.ndarray],
    history_for: HistoryFor,
    valid_value: Callable[[np.ndarray], float],
    half_lives: Sequence[float | None] = HALF_LIVES,
    weights: Sequence[float] = BLEND_WEIGHTS,
) -> tuple[ItemItemReranker, float]:
    """The reranker over train_matrix's items with the half-life and blend weight of the best validation value
    (the first of equals in grid order), and that value.

    EASE weights (with `ease_lambda`, the one the EASE baseline chose on validation) when at most
    EASE_MAX_ITEMS items have training interactions, cosine neighbours otherwise. valid_scores: the two-tower's
    [users, n_items] scores of the validation users; history_for(half_life): their history matrix;
    valid_value(served [users, n_items] scores): the validation SELECTION_METRIC of a ranking.
    """
    n_active = int((np.asarray(train_matrix.getnnz(axis=0)) > 0).sum())
    method = "ease" if n_active <= EASE_MAX_ITEMS else "cosine"
    lam = ease_lambda if method == "ease" else None
    reranker = ItemItemReranker(item_item_weights(train_matrix, method, lam, NEIGHBOURS), 0.0, method, NEIGHBOURS, lam)
    scores = np.asarray(valid_scores, dtype=np.float32)
    candidates = top_candidates(scores, valid_exclude)
    base = np.take_along_axis(scores, candidates, axis=1)
    best: tuple[float, float | None, float] | None = None
    for half_life in half_lives:
        item_item = reranker.item_item_batch(candidates, history_for(half_life))
        for weight in weights:
            value = valid_value(_on_candidates(candidates, blend(base, item_item, weight), scores.shape))
            if best is None or value > best[0]:
                best = (value, half_life, float(weight))
    if best is None:
        raise ValueError("no half-life and blend weight to try")
    return replace(reranker, half_life=best[1], weight=best[2]), best[0]
