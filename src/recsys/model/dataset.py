"""The interactions data set: reading the three parquet files, weighting interactions, train/valid/test splits.

Everything downstream (training, evaluation, baselines, publishing) reads interactions through here, so they all
agree on which rows count as positives and how much each weighs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys import schema

SPLIT_KINDS = ("temporal", "random")
HOLDOUT_FRACTION = 0.1  # per user: this share goes to test, the same share before it to valid
MIN_INTERACTIONS_TO_HOLD_OUT = 5  # users with fewer interactions stay entirely in train


@dataclass(frozen=True)
class Dataset:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame  # only rows whose user and item are in the two tables above
    dropped_interactions: int


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


# ------------------------------------------------------------------------------------------ reading
def read_dataset(data_dir: Path) -> Dataset:
    """The three parquet files of the schema; only the id/timestamp columns are required. Ids become str."""
    frames = {}
    for name, what in zip(schema.DATA_FILES, ("users", "items", "interactions"), strict=True):
        path = Path(data_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{what} file {path} is not a readable parquet file: {reason}") from exc
        _require_columns(frame, schema.REQUIRED_COLUMNS[name], what)
        for column in (schema.USER_ID, schema.ITEM_ID):
            if column in frame.columns:
                frame[column] = frame[column].astype(str)
        frames[what] = frame
    users, items, interactions = frames["users"], frames["items"], frames["interactions"]
    for frame, column, what in ((users, schema.USER_ID, "users"), (items, schema.ITEM_ID, "items")):
        if frame[column].duplicated().any():
            raise ValueError(f"{what} file has duplicate {column} values")
    interactions[schema.TIMESTAMP] = pd.to_datetime(interactions[schema.TIMESTAMP], utc=True)
    known = interactions[schema.USER_ID].isin(users[schema.USER_ID]) & interactions[schema.ITEM_ID].isin(
        items[schema.ITEM_ID]
    )
    return Dataset(
        users=users.reset_index(drop=True),
        items=items.reset_index(drop=True),
        interactions=interactions[known].reset_index(drop=True),
        dropped_interactions=int((~known).sum()),
    )


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack required column(s): {', '.join(missing)}")


# ------------------------------------------------------------------------------------------ weights
def interaction_weights(interactions: pd.DataFrame) -> np.ndarray:
    """How much each interaction counts as a positive (0 = not a positive).

    purchase > cart > positive_view, `rate` by its stars, negative_view 0. Without an interaction_type column
    every interaction is a positive of weight 1; a `rate` without a rating weighs like a view; unknown types 0.
    """
    if schema.INTERACTION_TYPE not in interactions.columns:
        return np.ones(len(interactions), dtype=np.float32)
    kinds = interactions[schema.INTERACTION_TYPE].astype("string")
    weights = kinds.map(schema.POSITIVE_WEIGHTS).astype("Float64").fillna(0.0).to_numpy(dtype=np.float32)
    is_rate = (kinds == schema.RATE).fillna(False).to_numpy(dtype=bool)
    if is_rate.any():
        view_stars = schema.POSITIVE_WEIGHTS[schema.POSITIVE_VIEW] / schema.RATE_WEIGHT_PER_STAR
        ratings = interactions.get(schema.RATING, pd.Series(np.nan, index=interactions.index))
        stars = pd.to_numeric(ratings, errors="coerce").astype("Float64").fillna(view_stars)
        rate_weights = stars.to_numpy(dtype=np.float32) * schema.RATE_WEIGHT_PER_STAR
        weights[is_rate] = np.clip(rate_weights[is_rate], 0.0, None)
    return weights


def positive_mask(interactions: pd.DataFrame) -> np.ndarray:
    """True for interactions that count as relevance (everything but negative views and unknown types)."""
    return interaction_weights(interactions) > 0


# ------------------------------------------------------------------------------------------ splits
def make_split(interactions: pd.DataFrame, kind: str, seed: int = 42) -> Split:
    """Per-user split: `temporal` holds out the latest interactions, `random` a seeded random 80/10/10.

    Each user with at least MIN_INTERACTIONS_TO_HOLD_OUT interactions gives round(10%) (>= 1) to test and as
    many to valid; users with fewer stay in train. Every input row lands in exactly one part.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split {kind!r}: expected one of {', '.join(SPLIT_KINDS)}")
    _require_columns(interactions, schema.REQUIRED_COLUMNS[schema.INTERACTIONS_FILE], "interactions")
    frame = interactions.reset_index(drop=True)
    if kind == "temporal":
        tie_break = [schema.INTERACTION_ID] if schema.INTERACTION_ID in frame.columns else []
        ordered = frame.sort_values([schema.USER_ID, schema.TIMESTAMP, *tie_break], kind="stable")
    else:
        shuffled = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
        ordered = shuffled.sort_values(schema.USER_ID, kind="stable")  # random order within each user
    by_user = ordered.groupby(schema.USER_ID, sort=False, observed=True)
    position = by_user.cumcount().to_numpy()
    size = by_user[schema.USER_ID].transform("size").to_numpy()
    n_holdout = np.where(
        size >= MIN_INTERACTIONS_TO_HOLD_OUT, np.maximum(1, np.round(size * HOLDOUT_FRACTION)).astype(np.int64), 0
    )
    from_end = size - 1 - position
    is_test = from_end < n_holdout
    is_valid = ~is_test & (from_end < 2 * n_holdout)
    is_train = ~is_test & ~is_valid
    return Split(train=ordered[is_train], valid=ordered[is_valid], test=ordered[is_test])


# ------------------------------------------------------------------------------------------ matrices
def interaction_matrix(interactions: pd.DataFrame, user_index: pd.Index, item_index: pd.Index) -> sp.csr_matrix:
    """Weighted user x item CSR matrix of the positive interactions (repeated pairs add up)."""
    rows, cols = interaction_codes(interactions, user_index, item_index)
    weights = interaction_weights(interactions)
    keep = weights > 0
    return sp.csr_matrix(
        (weights[keep], (rows[keep], cols[keep])), shape=(len(user_index), len(item_index)), dtype=np.float32
    )


def interaction_codes(
    interactions: pd.DataFrame, user_index: pd.Index, item_index: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    rows = user_index.get_indexer(interactions[schema.USER_ID].astype(str))
    cols = item_index.get_indexer(interactions[schema.ITEM_ID].astype(str))
    if (rows < 0).any() or (cols < 0).any():
        raise ValueError("interactions reference users or items that are not in the index")
    return rows.astype(np.int64), cols.astype(np.int64)


def items_per_user(rows: np.ndarray, cols: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Sorted unique item columns per user row, for every row 0..n_users-1."""
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols = rows[first], cols[first]
    bounds = np.searchsorted(rows, np.arange(n_users + 1))
    return [cols[bounds[r] : bounds[r + 1]] for r in range(n_users)]
