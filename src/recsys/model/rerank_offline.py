"""The rerank stage offline: the two-tower's candidates per user, the served model's score matrix that the
metrics read, and the blend weight chosen on the validation part.

Offline, a user's history for the item-item part is their training positives, unweighted (online the
recommender passes the user's purchased, carted and viewed items plus new events, also unweighted). For the
test part it stays the training positives, as for the towers and the EASE row: adding the validation items
would give the served model information the baselines it is compared with do not get.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.contract import RERANK_CANDIDATES
from recsys.model.rerank import EASE_MAX_ITEMS, NEIGHBOURS, ItemItemReranker, item_item_weights

# blend weights tried on validation; 0 keeps the two-tower's order (when the item-item part does not help)
BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0)
# the blend is chosen on validation NDCG@10: the metric issue 12's bar (served model >= EASE) is set on
SELECTION_METRIC = "ndcg@10"


def history_matrix(train_matrix: sp.csr_matrix, user_rows: np.ndarray) -> sp.csr_matrix:
    """[len(user_rows), n_items] with 1 for each of the user's training positives."""
    history = sp.csr_matrix(train_matrix[user_rows], dtype=np.float32)
    history.data[:] = 1.0
    return history


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
    n_candidates = min(n_candidates, scores.shape[1])
    masked = scores.copy()
    for row, items in enumerate(exclude):
        masked[row, items] = -np.inf
    candidates = np.argpartition(-masked, n_candidates - 1, axis=1)[:, :n_candidates]
    blended = reranker.score_batch(candidates, np.take_along_axis(scores, candidates, axis=1), history)
    served = np.full(scores.shape, -np.inf, dtype=np.float32)
    np.put_along_axis(served, candidates, blended, axis=1)
    return served


def fit_reranker(
    train_matrix: sp.csr_matrix,
    ease_lambda: float,
    valid_scores: np.ndarray,
    valid_user_rows: np.ndarray,
    valid_heldout: Sequence[np.ndarray],
    valid_exclude: Sequence[np.ndarray],
    weights: Sequence[float] = BLEND_WEIGHTS,
) -> tuple[ItemItemReranker, float]:
    """The reranker over train_matrix's items with the blend weight of the best validation SELECTION_METRIC
    (the smallest of equals), and that value.

    EASE weights (with `ease_lambda`, the one the EASE baseline chose on validation) when at most
    EASE_MAX_ITEMS items have training interactions, cosine neighbours otherwise. valid_scores: the two-tower's
    [len(valid_user_rows), n_items] scores of the validation users.
    """
    from recsys.model.evaluate import rank_metrics  # evaluate imports this module

    n_active = int((np.asarray(train_matrix.getnnz(axis=0)) > 0).sum())
    method = "ease" if n_active <= EASE_MAX_ITEMS else "cosine"
    item_weights = item_item_weights(train_matrix, method, ease_lambda if method == "ease" else None, NEIGHBOURS)
    history = history_matrix(train_matrix, valid_user_rows)
    best: tuple[float, ItemItemReranker] | None = None
    for weight in weights:
        reranker = ItemItemReranker(
            weights=item_weights,
            weight=float(weight),
            method=method,
            neighbours=NEIGHBOURS,
            ease_lambda=ease_lambda if method == "ease" else None,
        )
        served = reranked_scores(reranker, valid_scores, valid_exclude, history)
        value = rank_metrics(served, list(valid_heldout), list(valid_exclude), (10,))[SELECTION_METRIC]
        if best is None or value > best[0]:
            best = (value, reranker)
    if best is None:
        raise ValueError("no blend weight to try")
    return best[1], best[0]
