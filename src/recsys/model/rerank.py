"""The served model's second stage: the two-tower's top candidates reordered by item-item weights.

The towers retrieve (contract.RERANK_CANDIDATES items per user, known items excluded); `ItemItemReranker`
then adds, for each candidate, how strongly the user's history items point at it:

    blended = two_tower_score + weight * item_item / max |item_item over the candidates|

with item_item[c] = sum over history items h of r_h W[h, c], where r_h = 0.5 ** (age_h / half_life) weighs
recent items more (age 0 = the newest; without a half-life every r_h = 1). W is EASE's closed-form weight
matrix (Steck 2019) when the catalogue is small enough for its dense inverse (<= EASE_MAX_ITEMS items),
otherwise the cosine similarity of the item columns; either way each row keeps only its NEIGHBOURS entries
largest in absolute value, so W is a sparse [n_items, n_items] CSR matrix over the model's item index
(TrainedModel.item_ids). Dividing by the largest |item_item| among the candidates puts the item-item part on
the cosine's scale for every user, light or heavy, so one blend weight fits all. The half-life and the blend
weight are chosen on the validation part, EASE's lambda is the EASE baseline's (rerank_offline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.model.baselines import cosine_similarity, ease_weights

RERANKER_WEIGHTS_FILE = "reranker.npz"
RERANKER_CONFIG_FILE = "reranker.json"
RERANKER_FILES = (RERANKER_WEIGHTS_FILE, RERANKER_CONFIG_FILE)
# EASE inverts a dense n x n float64 matrix (20k items: 3.2 GB a copy, O(n^3) time); beyond this, cosine neighbours
EASE_MAX_ITEMS = 20_000
# weights kept per history item (ML-100K validation NDCG@10: 200 as good as the full matrix, 100 and 50 ~0.002 less)
NEIGHBOURS = 200
METHODS = ("ease", "cosine")
# up to this many weights in the history items' rows, numpy reads them faster than scipy slices the candidates'
# columns (which costs ~0.2 ms whatever the size): measured crossover ~20 history items x 200 neighbours
HISTORY_ROWS_MAX_ENTRIES = 4_000
UNKNOWN = -1  # position of an item the model has no index entry for


class RerankerError(ValueError):
    """Bad reranker input, or reranker files that do not fit together."""


@dataclass
class ItemItemReranker:
    """Item-item weights over the model's items and the blend weight; see the module docstring."""

    weights: sp.csr_matrix  # [n_items, n_items]; row h: how much history item h votes for each item
    weight: float  # blend weight of the normalised item-item part
    method: str  # "ease" or "cosine"
    neighbours: int
    ease_lambda: float | None = None
    half_life: float | None = None  # history recency weighting (see recency_weights); None: every item weighs 1

    def __post_init__(self) -> None:
        self.weights = sp.csr_matrix(self.weights, dtype=np.float32)
        rows, cols = self.weights.shape
        if rows != cols:
            raise RerankerError(f"item-item weights must be square, got {self.weights.shape}")
        if self.method not in METHODS:
            raise RerankerError(f"unknown reranker method {self.method!r}: expected one of {', '.join(METHODS)}")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise RerankerError(f"blend weight must be a finite number >= 0, got {self.weight}")
        if self.half_life is not None and not (np.isfinite(self.half_life) and self.half_life > 0):
            raise RerankerError(f"half_life must be a finite number > 0 or None, got {self.half_life}")
        self._incoming = self.weights.T.tocsr()  # row c: the votes candidate c gets (fast per-request slicing)

    @property
    def n_items(self) -> int:
        return self.weights.shape[0]

    def score(
        self, candidate_items: np.ndarray, two_tower_scores: np.ndarray, history_items: Sequence[int]
    ) -> np.ndarray:
        """Blended score of each candidate (float32, same order); higher is better.

        candidate_items / history_items: positions in the model's item index; UNKNOWN (-1) marks an item the
        model does not know (a candidate gets no item-item part, a history item is dropped); any other value
        outside [0, n_items) raises RerankerError. two_tower_scores: the candidates' cosine scores.
        history_items: the user's positive items OLDEST FIRST; an item listed twice counts once, as its newest
        occurrence (recency_weights).
        """
        candidates = self._positions(candidate_items, "candidate_items")
        base = np.asarray(two_tower_scores, dtype=np.float32).reshape(-1)
        if base.shape != candidates.shape:
            raise RerankerError(f"{candidates.size} candidates but {base.size} two-tower scores")
        history = self._positions(history_items, "history_items")
        history = history[history != UNKNOWN]
        # keep each item's newest occurrence, in order: reversed, np.unique's first index is the newest
        _, newest_first = np.unique(history[::-1], return_index=True)
        history = history[::-1][np.sort(newest_first)][::-1]
        if not history.size or not candidates.size:
            return base.copy()
        votes = recency_weights(history.size, self.half_life)
        item_item = self._item_item(candidates, history, votes)
        return self._blend(base[None, :], item_item[None, :])[0]

    def score_batch(
        self, candidate_items: np.ndarray, two_tower_scores: np.ndarray, history: sp.csr_matrix
    ) -> np.ndarray:
        """`score` for many users at once (offline evaluation): candidates and two-tower scores [users, C],
        history [users, n_items] (row u: user u's history items, each weighing recency_weights' value for its
        age). Equal to `score` row by row."""
        item_item = self.item_item_batch(candidate_items, history)
        return blend(np.asarray(two_tower_scores, dtype=np.float32), item_item, self.weight)

    def item_item_batch(self, candidate_items: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """[users, C]: sum over each user's history of weight x W[h, c] (the unblended item-item part)."""
        candidates = self._positions(candidate_items, "candidate_items").reshape(np.shape(candidate_items))
        pooled = np.asarray((sp.csr_matrix(history, dtype=np.float32) @ self.weights).toarray())
        item_item = np.take_along_axis(pooled, np.maximum(candidates, 0), axis=1)
        item_item[candidates == UNKNOWN] = 0.0
        return item_item

    def reindexed(self, source_positions: np.ndarray) -> ItemItemReranker:
        """The same reranker over another item index: new item a is old item source_positions[a] (UNKNOWN: an
        item without weights). Moves a reranker between the evaluation's catalogue and the model's items."""
        source = self._positions(source_positions, "source_positions")
        known = np.flatnonzero(source != UNKNOWN)
        select = sp.csr_matrix(
            (np.ones(known.size, np.float32), (known, source[known])), shape=(source.size, self.n_items)
        )
        return ItemItemReranker(
            weights=select @ self.weights @ select.T,
            weight=self.weight,
            method=self.method,
            neighbours=self.neighbours,
            ease_lambda=self.ease_lambda,
            half_life=self.half_life,
        )

    def _blend(self, base: np.ndarray, item_item: np.ndarray) -> np.ndarray:
        return blend(base, item_item, self.weight)

    def _item_item(self, candidates: np.ndarray, history: np.ndarray, votes: np.ndarray) -> np.ndarray:
        """sum_h votes[h] * W[h, c] for each candidate c: from the history items' rows of W for short histories
        (numpy), else from the candidates' rows of W^T (scipy's row slicing and mat-vec)."""
        known = candidates != UNKNOWN
        history_lengths = self.weights.indptr[history + 1] - self.weights.indptr[history]
        if history_lengths.sum() <= HISTORY_ROWS_MAX_ENTRIES:
            entries = _segments(self.weights.indptr, history, history_lengths)
            targets = self.weights.indices[entries]
            values = self.weights.data[entries] * np.repeat(votes, history_lengths)
            distinct, inverse = np.unique(candidates, return_inverse=True)
            slot = np.searchsorted(distinct, targets).clip(max=distinct.size - 1)
            hit = distinct[slot] == targets
            sums = np.bincount(slot[hit], weights=values[hit], minlength=distinct.size)
            return sums[inverse].astype(np.float32)
        history_vector = np.bincount(history, weights=votes, minlength=self.n_items).astype(np.float32)
        out = np.zeros(candidates.size, np.float32)
        out[known] = self._incoming[candidates[known]] @ history_vector
        return out

    def _positions(self, values: np.ndarray | Sequence[int], what: str) -> np.ndarray:
        positions = np.asarray(values).reshape(-1)
        if positions.size and not np.issubdtype(positions.dtype, np.integer):
            raise RerankerError(f"{what} must be integer item positions, got dtype {positions.dtype}")
        positions = positions.astype(np.int64)
        bad = (positions < UNKNOWN) | (positions >= self.n_items)
        if bad.any():
            raise RerankerError(
                f"{what} holds {int(bad.sum())} position(s) outside [0, {self.n_items}) (and not -1 = unknown), "
                f"e.g. {int(positions[bad][0])}"
            )
        return positions

    # ---------------------------------------------------------------------------------------- files
    def save(self, model_dir: Path) -> None:
        """reranker.npz (the CSR arrays) and reranker.json (weight, method, neighbours, lambda) in model_dir."""
        model_dir = Path(model_dir)
        sp.save_npz(model_dir / RERANKER_WEIGHTS_FILE, self.weights, compressed=True)
        (model_dir / RERANKER_CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True))

    def config(self) -> dict[str, float | int | str | None]:
        return {
            "weight": self.weight,
            "method": self.method,
            "neighbours": self.neighbours,
            "ease_lambda": self.ease_lambda,
            "half_life": self.half_life,
            "n_items": self.n_items,
        }

    @classmethod
    def load(cls, model_dir: Path) -> ItemItemReranker | None:
        """The reranker saved in model_dir; None when it has none (a model trained without it)."""
        model_dir = Path(model_dir)
        present = [(model_dir / name).is_file() for name in RERANKER_FILES]
        if not any(present):
            return None
        if not all(present):
            raise RerankerError(f"{model_dir}: {' and '.join(RERANKER_FILES)} must both be present or both absent")
        config = json.loads((model_dir / RERANKER_CONFIG_FILE).read_text())
        weights = sp.load_npz(model_dir / RERANKER_WEIGHTS_FILE)
        if weights.shape[0] != config["n_items"]:
            raise RerankerError(
                f"{model_dir}: reranker weights cover {weights.shape[0]} items, config says {config['n_items']}"
            )
        return cls(
            weights=weights,
            weight=float(config["weight"]),
            method=config["method"],
            neighbours=int(config["neighbours"]),
            ease_lambda=config["ease_lambda"],
            half_life=config["half_life"],
        )


def recency_weights(n_history: int, half_life: float | None) -> np.ndarray:
    """Weights of a history of n items, oldest first: 0.5 ** (age / half_life), age 0 for the newest item;
    all 1 without a half-life. On MovieLens' temporal split recent items predict the next ones far better
    (validation NDCG@10 of the blend 0.136 unweighted, 0.196 with a half-life of 5 items); on a random split
    every item counts alike (measured): the half-life is chosen on validation."""
    if half_life is None:
        return np.ones(n_history, np.float32)
    age = np.arange(n_history - 1, -1, -1, dtype=np.float64)
    return (0.5 ** (age / half_life)).astype(np.float32)


def blend(base: np.ndarray, item_item: np.ndarray, weight: float) -> np.ndarray:
    """base + weight x item_item / max |item_item| per row ([users, C] arrays)."""
    scale = np.abs(item_item).max(axis=1, keepdims=True)
    normalised = np.divide(item_item, scale, out=np.zeros_like(item_item), where=scale > 0)
    return (base + np.float32(weight) * normalised).astype(np.float32)


# -------------------------------------------------------------------------------------------- fitting W
def item_item_weights(
    train_matrix: sp.csr_matrix, method: str, ease_lambda: float | None, neighbours: int = NEIGHBOURS
) -> sp.csr_matrix:
    """[n_items, n_items] item-item weights from the user x item training matrix, each row cut to its
    `neighbours` entries largest in absolute value (EASE's negative weights carry signal too: measured)."""
    if method == "ease":
        if ease_lambda is None:
            raise RerankerError("EASE weights need a lambda")
        active, block = ease_weights(train_matrix, ease_lambda)
        kept = _top_per_row(block, neighbours)
        n_items = train_matrix.shape[1]
        coo = kept.tocoo()
        return sp.csr_matrix((coo.data, (active[coo.row], active[coo.col])), shape=(n_items, n_items))
    if method == "cosine":
        return _top_per_row(cosine_similarity(train_matrix), neighbours)
    raise RerankerError(f"unknown reranker method {method!r}: expected one of {', '.join(METHODS)}")


def _top_per_row(matrix: np.ndarray | sp.spmatrix, neighbours: int) -> sp.csr_matrix:
    """Each row's `neighbours` entries largest in absolute value, as CSR (float32)."""
    if neighbours < 1:
        raise RerankerError(f"neighbours must be >= 1, got {neighbours}")
    if sp.issparse(matrix):
        return _top_per_sparse_row(sp.csr_matrix(matrix, dtype=np.float32), neighbours)
    dense = np.asarray(matrix, dtype=np.float32)
    n_rows, n_cols = dense.shape
    if neighbours >= n_cols:
        return sp.csr_matrix(dense)
    cols = np.argpartition(-np.abs(dense), neighbours - 1, axis=1)[:, :neighbours]
    values = np.take_along_axis(dense, cols, axis=1)
    rows = np.repeat(np.arange(n_rows), neighbours)
    kept = sp.csr_matrix((values.ravel(), (rows, cols.ravel())), shape=dense.shape, dtype=np.float32)
    kept.eliminate_zeros()
    return kept


def _top_per_sparse_row(csr: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    keep = []
    for row in range(csr.shape[0]):
        start, end = csr.indptr[row], csr.indptr[row + 1]
        if end - start > neighbours:
            keep.append(start + np.argpartition(-np.abs(csr.data[start:end]), neighbours - 1)[:neighbours])
        else:
            keep.append(np.arange(start, end))
    kept = np.concatenate(keep) if keep else np.empty(0, np.int64)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    kept_matrix = sp.csr_matrix((csr.data[kept], (rows[kept], csr.indices[kept])), shape=csr.shape, dtype=np.float32)
    kept_matrix.eliminate_zeros()
    return kept_matrix


def _segments(indptr: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions in a CSR matrix's indices/data of all entries of `rows` (of these lengths), row after row."""
    return np.repeat(indptr[rows] - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
