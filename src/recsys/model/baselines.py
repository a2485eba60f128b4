"""Non-neural baselines the two-tower model is measured against: popularity, ItemKNN (cosine) and EASE.

Each baseline is `fit(train_matrix) -> scorer`, where train_matrix is the weighted user x item matrix
(scipy.sparse CSR, rows = users, columns = items) and `scorer(user_rows) -> scores` returns a dense float32
[len(user_rows), n_items] array of scores for those rows of the matrix (higher = better).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]

# EASE regularisation strengths tried on the validation part, in units of one unit-weight interaction (fit_ease
# scales them by the matrix's mean squared weight). The paper uses ~500 on MovieLens (binary); sparse synthetic
# catalogues want far less, so the grid spans both.
EASE_LAMBDAS = (5.0, 20.0, 100.0, 500.0)


def fit_popularity(train_matrix: sp.csr_matrix) -> Scorer:
    """Every user gets the same ranking: items by how many users interacted with them positively."""
    users_per_item = np.asarray((train_matrix > 0).sum(axis=0), dtype=np.float32).ravel()

    def score(user_rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(users_per_item, (len(user_rows), users_per_item.size)).copy()

    return score


def fit_itemknn(train_matrix: sp.csr_matrix) -> Scorer:
    """Item-item cosine similarity on the weighted matrix; a user's score is the sum over their items."""
    matrix = sp.csr_matrix(train_matrix, dtype=np.float32)
    similarity = cosine_similarity(matrix)

    def score(user_rows: np.ndarray) -> np.ndarray:
        return np.asarray((matrix[user_rows] @ similarity).toarray(), dtype=np.float32)

    return score


def cosine_similarity(train_matrix: sp.csr_matrix) -> sp.csr_matrix:
    """[n_items, n_items] cosine similarity of the item columns (sparse, float32), zero diagonal."""
    matrix = sp.csr_matrix(train_matrix, dtype=np.float32)
    column_norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
    inverse_norms = np.divide(1.0, column_norms, out=np.zeros_like(column_norms), where=column_norms > 0)
    normalised = matrix @ sp.diags(inverse_norms.astype(np.float32))
    similarity = sp.csr_matrix(normalised.T @ normalised)
    similarity.setdiag(0.0)  # an item must not vote for itself
    similarity.eliminate_zeros()
    return similarity


def fit_ease(train_matrix: sp.csr_matrix, lam: float) -> Scorer:
    """EASE (Steck 2019) over the active items (see ease_weights); inactive items score 0."""
    matrix = sp.csr_matrix(train_matrix, dtype=np.float32)
    active, weights = ease_weights(matrix, lam)
    active_matrix = matrix[:, active]
    n_items = matrix.shape[1]

    def score(user_rows: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(user_rows), n_items), dtype=np.float32)
        scores[:, active] = active_matrix[user_rows] @ weights
        return scores

    return score


def ease_weights(train_matrix: sp.csr_matrix, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """EASE's item-item weights: B = I - P / diag(P) with P = (X^T X + lam' I)^-1, diag(B) = 0.

    Returns (active, B): the columns with at least one training interaction, and B [len(active), len(active)]
    float32 over them. Only active items enter the Gram matrix, which keeps the dense inverse as small as the
    active catalogue. lam' = lam x the mean squared weight of the stored interactions, so lam means the same on
    a binary matrix and on one whose interactions all weigh 3 (every MovieLens rating is a purchase): without
    it, weights would silently divide the regularisation by 9.
    """
    if lam <= 0:
        raise ValueError(f"EASE lambda must be > 0, got {lam}")
    matrix = sp.csr_matrix(train_matrix, dtype=np.float64)
    active = np.flatnonzero(np.asarray(matrix.getnnz(axis=0)) > 0)
    active_matrix = matrix[:, active]
    gram = np.asarray((active_matrix.T @ active_matrix).toarray())
    weight_scale = float(np.mean(matrix.data**2)) if matrix.nnz else 1.0
    gram[np.diag_indices_from(gram)] += lam * weight_scale
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    return active, weights.astype(np.float32)
