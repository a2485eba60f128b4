"""Offline evaluation: full-ranking metrics, and the model against baselines on the same split.

Protocol (the same for the two-tower model and every baseline):
- `dataset.make_split` holds out each eligible user's latest (temporal) or randomly chosen (random) interactions.
- Everything is fitted on the train part. The validation part picks hyper-parameters (EASE's lambda, the
  model's early stopping); the test part gives the reported numbers.
- Ranking is over the whole catalogue; items the user already interacted with (train, plus valid when scoring
  test) are excluded from the ranking and from relevance. Only positive held-out interactions are relevant.
- Metrics are averaged over the users with at least one relevant test item; Recall@k = hits / relevant,
  NDCG@k with binary gains and the ideal DCG of min(relevant, k) hits.
- The model's reported ("model") metrics are the served model's: each user's top RERANK_CANDIDATES two-tower
  items (known items excluded) reranked by the item-item stage (rerank.py; blend chosen on validation, the
  user's training items as history); "retrieval" holds the two-tower's own full ranking.

Against RecBole's protocol (eval_args split RS 8:1:1, group_by user, order RO, mode full), on MovieLens-100K:
the same random per-user 80/10/10, full ranking, train items masked (train + valid for test), users embedded
from their training interactions only, metric definitions and user averaging. It differs in: per-user counts
(we hold out round(10%), at least 1, for each of test and valid; RecBole floor(10%) with its own minimum-1
rule), users with fewer than MIN_INTERACTIONS_TO_HOLD_OUT interactions stay wholly in train (none in ML-100K),
the random draw itself (our seeds, not RecBole's 2020), and we report the mean of 3 seeds rather than one
run. The temporal split (each user's latest 10% tested) has no RecBole counterpart in this form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys import schema
from recsys.contract import GATE_METRIC, RERANK_CANDIDATES
from recsys.model.baselines import EASE_LAMBDAS, Scorer, fit_ease, fit_itemknn, fit_popularity
from recsys.model.dataset import (
    interaction_codes,
    interaction_matrix,
    items_per_user,
    make_split,
    positive_mask,
    read_dataset,
)
from recsys.model.rerank import ItemItemReranker
from recsys.model.rerank_offline import SELECTION_METRIC, fit_reranker, history_matrix, reranked_scores

DEFAULT_KS = (10, 20, 50)
USER_CHUNK = 512  # users scored per block in rank_metrics: bounds memory at chunk x n_items

# (users, items, train interactions) -> scores [len(users), len(items)], columns in the items' row order
UserScores = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """The users to score and, per user, the relevant held-out items and the items to exclude (column ids)."""

    user_rows: np.ndarray  # rows of the user index, only users with at least one relevant held-out item
    heldout: list[np.ndarray]
    exclude: list[np.ndarray]


# ------------------------------------------------------------------------------------------ relevance
def build_eval_set(known: pd.DataFrame, heldout: pd.DataFrame, user_index: pd.Index, item_index: pd.Index) -> EvalSet:
    """Relevant = positive held-out items the user has not interacted with in `known`; exclude = `known` items."""
    n_users = len(user_index)
    known_items = items_per_user(*interaction_codes(known, user_index, item_index), n_users)
    positives = heldout[positive_mask(heldout)]
    heldout_items = items_per_user(*interaction_codes(positives, user_index, item_index), n_users)
    relevant = [np.setdiff1d(h, e, assume_unique=True) for h, e in zip(heldout_items, known_items, strict=True)]
    user_rows = np.array([row for row in range(n_users) if relevant[row].size], dtype=np.int64)
    return EvalSet(
        user_rows=user_rows, heldout=[relevant[r] for r in user_rows], exclude=[known_items[r] for r in user_rows]
    )


# ------------------------------------------------------------------------------------------ metrics
def rank_metrics(
    scores: np.ndarray, heldout: list[np.ndarray], exclude: list[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall, NDCG, HitRate (`hit@k`) and MRR (`mrr@k`) at each k, averaged over users with held-out items.

    scores: [n_users, n_items]; heldout[u] / exclude[u]: item columns relevant to / already seen by user u.
    Excluded items are ranked last (-inf). Recall@k = hits / |relevant|; NDCG uses binary gains.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or not (len(heldout) == len(exclude) == scores.shape[0]):
        raise ValueError("scores must be [n_users, n_items] with one heldout and one exclude array per user")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_items = scores.shape[1]
    ks = sorted({int(k) for k in ks})
    depth = min(max(ks), n_items)
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])  # ideal[n] = IDCG with n relevant items in the list
    totals = dict.fromkeys((f"{name}@{k}" for k in ks for name in ("recall", "ndcg", "hit", "mrr")), 0.0)
    evaluated = 0
    for start in range(0, scores.shape[0], USER_CHUNK):
        block_users = [u for u in range(start, min(start + USER_CHUNK, scores.shape[0])) if len(heldout[u])]
        if not block_users:
            continue
        block = scores[block_users].astype(np.float32, copy=True)
        ex_rows, ex_cols = _flatten([exclude[u] for u in block_users])
        block[ex_rows, ex_cols] = -np.inf
        relevant = np.zeros(block.shape, dtype=bool)
        relevant[_flatten([heldout[u] for u in block_users])] = True
        top = _top_columns(block, depth)
        hits = np.take_along_axis(relevant, top, axis=1)
        n_relevant = relevant.sum(axis=1)
        first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)
        for k in ks:
            k_hits = hits[:, :k]
            found = k_hits.sum(axis=1)
            totals[f"recall@{k}"] += float((found / n_relevant).sum())
            dcg = (k_hits * discounts[: k_hits.shape[1]]).sum(axis=1)
            totals[f"ndcg@{k}"] += float((dcg / ideal[np.minimum(n_relevant, k_hits.shape[1])]).sum())
            totals[f"hit@{k}"] += float((found > 0).sum())
            totals[f"mrr@{k}"] += float(np.where(first_hit < k, 1.0 / (first_hit + 1), 0.0).sum())
        evaluated += len(block_users)
    if evaluated == 0:
        raise ValueError("no user has a relevant held-out item: nothing to evaluate")
    return {name: total / evaluated for name, total in totals.items()}


def _top_columns(block: np.ndarray, depth: int) -> np.ndarray:
    """The `depth` best columns of each row, best first."""
    if depth < block.shape[1]:
        candidates = np.argpartition(-block, depth - 1, axis=1)[:, :depth]
    else:
        candidates = np.broadcast_to(np.arange(block.shape[1]), block.shape)
    order = np.argsort(-np.take_along_axis(block, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def _flatten(per_row: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in per_row], dtype=np.int64)
    rows = np.repeat(np.arange(len(per_row)), lengths)
    cols = np.concatenate(per_row).astype(np.int64) if lengths.sum() else np.empty(0, dtype=np.int64)
    return rows, cols


def score_eval_set(scorer: Scorer, eval_set: EvalSet, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    return rank_metrics(scorer(eval_set.user_rows), eval_set.heldout, eval_set.exclude, ks)


def choose_ease_lambda(
    train_matrix: sp.csr_matrix, valid_set: EvalSet, lambdas: Sequence[float] = EASE_LAMBDAS
) -> tuple[float, Scorer]:
    """The lambda with the best validation GATE_METRIC (the first of equals), and its fitted scorer."""
    best: tuple[float, float, Scorer] | None = None
    for lam in lambdas:
        scorer = fit_ease(train_matrix, lam)
        value = score_eval_set(scorer, valid_set, (10,))[GATE_METRIC]
        if best is None or value > best[0]:
            best = (value, lam, scorer)
    if best is None:
        raise ValueError("no EASE lambda to try")
    return best[1], best[2]


# ------------------------------------------------------------------------------------------ the report
@dataclass(frozen=True)
class ServedModel:
    """A model to evaluate: its two-tower scores, and its rerank stage over `item_ids` (the model's item index).

    reranker: the model's own (a loaded model dir), FIT_RERANKER (fit one on the validation part, as training
    does) or None (no rerank stage: the served ranking is the two-tower's).
    """

    user_scores: UserScores
    item_ids: Sequence[str] = ()
    reranker: ItemItemReranker | str | None = None


FIT_RERANKER = "fit"


def trained_model(model_dir: Path) -> ServedModel:
    """A saved model: scores encode_users(users, train history) . encode_items(items), and its reranker."""
    from recsys.model.artifacts import load_model

    model = load_model(model_dir)

    def score(users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame) -> np.ndarray:
        return model.encode_users(users, history=train) @ model.encode_items(items).T

    return ServedModel(score, model.item_ids, model.reranker)


def evaluate_model_and_baselines(
    data_dir: Path,
    model_dir: Path | None,
    split: str,
    k_values: Sequence[int] = DEFAULT_KS,
    seed: int = 42,
    user_scores: UserScores | None = None,
) -> dict:
    """Test-part metrics of the model (from `user_scores`, else the model in `model_dir`, else none) and of
    popularity, ItemKNN and EASE, all fitted on the same train part. See `evaluate_served_model`."""
    served = ServedModel(user_scores) if user_scores is not None else None
    if served is None and model_dir is not None:
        served = trained_model(model_dir)
    return evaluate_served_model(data_dir, served, split, k_values, seed)[0]


def evaluate_served_model(
    data_dir: Path,
    served: ServedModel | None,
    split: str,
    k_values: Sequence[int] = DEFAULT_KS,
    seed: int = 42,
) -> tuple[dict, ItemItemReranker | None]:
    """Test-part metrics of the served model and of popularity, ItemKNN and EASE, all fitted on the same train
    part; and the served model's reranker over its item_ids (the fitted one with FIT_RERANKER).

    Returns ({"split", "model": served metrics, "retrieval": the two-tower alone, "baselines": {name: metrics},
    "details": {...}}, reranker). "model" and "retrieval" are absent without a model; they are equal without a
    rerank stage. The served metrics rank each user's top RERANK_CANDIDATES two-tower items by the blend.
    """
    data = read_dataset(data_dir)
    parts = make_split(data.interactions, split, seed)
    user_index = pd.Index(data.users[schema.USER_ID])
    item_index = pd.Index(data.items[schema.ITEM_ID])
    train_matrix = interaction_matrix(parts.train, user_index, item_index)
    valid_set = build_eval_set(parts.train, parts.valid, user_index, item_index)
    test_set = build_eval_set(pd.concat([parts.train, parts.valid]), parts.test, user_index, item_index)
    ease_lambda, ease = choose_ease_lambda(train_matrix, valid_set)
    baselines = {
        "popularity": score_eval_set(fit_popularity(train_matrix), test_set, k_values),
        "itemknn": score_eval_set(fit_itemknn(train_matrix), test_set, k_values),
        "ease": score_eval_set(ease, test_set, k_values),
    }
    result: dict = {"split": split}
    details: dict = {}
    reranker: ItemItemReranker | None = None
    if served is not None:
        scores = _model_scores(served.user_scores, data.users, data.items, parts.train, test_set.user_rows)
        result["retrieval"] = rank_metrics(scores, test_set.heldout, test_set.exclude, k_values)
        result["model"] = result["retrieval"]
        if served.reranker is not None:
            # on_columns: the reranker over the evaluation's item columns, reranker: over the model's item_ids
            if isinstance(served.reranker, ItemItemReranker):
                reranker = served.reranker
                on_columns = reranker.reindexed(pd.Index(served.item_ids).get_indexer(item_index))
            elif served.reranker == FIT_RERANKER:
                valid_scores = _model_scores(
                    served.user_scores, data.users, data.items, parts.train, valid_set.user_rows
                )
                on_columns, details["valid_served_" + SELECTION_METRIC] = fit_reranker(
                    train_matrix,
                    ease_lambda,
                    valid_scores,
                    valid_set.exclude,
                    partial(history_matrix, parts.train, user_index, item_index, valid_set.user_rows),
                    lambda ranked: rank_metrics(ranked, valid_set.heldout, valid_set.exclude, (10,))[SELECTION_METRIC],
                )
                reranker = on_columns.reindexed(item_index.get_indexer(pd.Index(served.item_ids)))
            else:
                raise ValueError(f"reranker must be an ItemItemReranker, {FIT_RERANKER!r} or None")
            history = history_matrix(parts.train, user_index, item_index, test_set.user_rows, on_columns.half_life)
            reranked = reranked_scores(on_columns, scores, test_set.exclude, history)
            result["model"] = rank_metrics(reranked, test_set.heldout, test_set.exclude, k_values)
            details["reranker"] = {**reranker.config(), "candidates": RERANK_CANDIDATES}
    result["baselines"] = baselines
    result["details"] = {
        "seed": seed,
        "k_values": sorted(set(k_values)),
        "users_evaluated": int(test_set.user_rows.size),
        "n_users": len(user_index),
        "n_items": len(item_index),
        "train_interactions": len(parts.train),
        "valid_interactions": len(parts.valid),
        "test_interactions": len(parts.test),
        "dropped_interactions": data.dropped_interactions,
        "ease_lambda": ease_lambda,
        **details,
    }
    return result, reranker


def _model_scores(
    user_scores: UserScores, users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame, user_rows: np.ndarray
) -> np.ndarray:
    chosen = users.iloc[user_rows].reset_index(drop=True)
    scores = np.asarray(user_scores(chosen, items, train), dtype=np.float32)
    if scores.shape != (len(chosen), len(items)):
        raise ValueError(f"model scores have shape {scores.shape}, expected {(len(chosen), len(items))}")
    return scores
