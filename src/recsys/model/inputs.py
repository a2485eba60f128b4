"""Feature encoding: pandas frames -> the integer / float tensors the towers take.

A `FeatureSpace` is fitted on the training data (id vocabularies, category and preference tokens, numeric
statistics) and saved in mappings.json, so serving encodes features exactly as training did. Every optional
column is used when present and skipped when absent; unknown ids and tokens map to index 0 (OOV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys import schema
from recsys.model.dataset import positive_mask
from recsys.text import encode_texts, item_texts

OOV = 0
AGE_BOUNDARIES = (18, 25, 35, 45, 55, 65)  # bucket 0 = unknown, 1..7 = the ranges these bound
CATEGORY_LEVELS = 3  # department, group, leaf
MAX_HISTORY = 50  # recent positive items pooled by the user tower (serving pools the same many)
PRICE_COLUMNS = (schema.DISCOUNTED_PRICE, schema.ACTUAL_PRICE)  # the first present one sets relative price
CONTENT_DIM = 64  # principal components of item text vectors that users' history pools
# numeric item columns, each with whether it is log1p-compressed before standardising (prices and counts are
# heavy-tailed)
NUMERIC_COLUMNS: dict[str, bool] = {
    schema.ACTUAL_PRICE: True,
    schema.DISCOUNTED_PRICE: True,
    schema.DISCOUNT_PERCENTAGE: False,
    schema.RATING: False,
    schema.RATING_COUNT: True,
}


def _vocabulary(values: Sequence[str]) -> dict[str, int]:
    return {value: index + 1 for index, value in enumerate(values)}


def _tokens(value: Any, separator: str) -> list[str]:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return []
    return [token.strip() for token in str(value).split(separator) if token.strip()]


def category_path_tokens(category: Any) -> list[str]:
    """'A|B|C' -> ['A', 'A|B', 'A|B|C']: each level keyed by its full prefix so equal leaf names stay apart."""
    parts = _tokens(category, schema.CATEGORY_SEPARATOR)[:CATEGORY_LEVELS]
    return [schema.CATEGORY_SEPARATOR.join(parts[: level + 1]) for level in range(len(parts))]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="object")


def _pad(rows: list[list[int]], width: int) -> torch.Tensor:
    out = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[-width:] if width else []
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def deepest_categories(categories: pd.Series) -> list[str]:
    """Each item's most specific category token ("" when it has none)."""
    return [(category_path_tokens(c) or [""])[-1] for c in categories]


def age_buckets(ages: pd.Series) -> np.ndarray:
    values = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    buckets = np.searchsorted(np.asarray(AGE_BOUNDARIES), values, side="right") + 1
    return np.where(np.isnan(values), OOV, buckets).astype(np.int64)


@dataclass
class FeatureSpace:
    """Vocabularies and statistics fitted on training data; JSON round-trips through mappings.json.

    Besides the raw columns, items with a price get a derived numeric: price relative to their category (what
    separates budget from luxury across categories; no popularity input: it let the towers overfit, measured).
    Without numeric columns the item tower has no numeric input at all. Users get the categories and mean
    relative price of their recent items, looked up per known item (item_category, item_relative_price).
    """

    user_ids: list[str]
    item_ids: list[str]
    genders: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)
    category_tokens: list[str] = field(default_factory=list)
    numeric_columns: list[str] = field(default_factory=list)
    numeric_mean: list[float] = field(default_factory=list)
    numeric_std: list[float] = field(default_factory=list)
    use_text: bool = False
    max_preferences: int = 1
    price_column: str | None = None
    category_price: dict[str, list[float]] = field(default_factory=dict)  # deepest category -> [mean, std]
    category_numerics: dict[str, list[float]] = field(default_factory=dict)  # deepest category -> numeric means
    item_category: list[int] = field(default_factory=list)  # per known item, its deepest category token
    item_relative_price: list[float] = field(default_factory=list)  # per known item

    def __post_init__(self) -> None:
        self.user_index = _vocabulary(self.user_ids)
        self.item_index = _vocabulary(self.item_ids)
        self.gender_index = _vocabulary(self.genders)
        self.preference_index = _vocabulary(self.preferences)
        self.category_index = _vocabulary(self.category_tokens)
        # index 0 (OOV item) carries no category and the average price
        self._item_category = np.array([OOV, *self.item_category], dtype=np.int64)
        self._item_relative_price = np.array([0.0, *self.item_relative_price], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpace:
        return cls(**data)

    # ----------------------------------------------------------------------------------- tower sizes
    def user_tower_sizes(self) -> dict[str, int]:
        return {
            "n_users": len(self.user_ids),
            "n_genders": len(self.genders),
            "n_age_buckets": len(AGE_BOUNDARIES) + 1,
            "n_preferences": len(self.preferences),
            "n_items": len(self.item_ids),
            "n_category_tokens": len(self.category_tokens),
            "content_dim": CONTENT_DIM if self.use_text else 0,
        }

    def item_tower_sizes(self) -> dict[str, int]:
        return {
            "n_items": len(self.item_ids),
            "n_category_tokens": len(self.category_tokens),
            "n_numerics": 2 * len(self.numeric_columns) + int(self.price_column is not None),
            "text_dim": schema.TEXT_EMBEDDING_DIM if self.use_text else 0,
        }

    # ----------------------------------------------------------------------------------- encoding
    def item_indices(self, item_ids: Sequence[Any]) -> np.ndarray:
        return np.fromiter((self.item_index.get(str(i), OOV) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def user_indices(self, user_ids: Sequence[Any]) -> np.ndarray:
        lookup = self.user_index
        return np.fromiter(
            (OOV if u is None or u is pd.NA else lookup.get(str(u), OOV) for u in user_ids),
            dtype=np.int64,
            count=len(user_ids),
        )

    def history_features(self, history_items: torch.Tensor) -> dict[str, torch.Tensor]:
        """From [n, MAX_HISTORY] known-item indices (0 = none): their categories and mean relative price."""
        rows = history_items.cpu().numpy()
        present = rows != OOV
        count = present.sum(axis=1)
        price_sum = np.where(present, self._item_relative_price[rows], 0.0).sum(axis=1)
        mean_price = np.divide(price_sum, count, out=np.zeros(len(rows)), where=count > 0)
        price = np.stack([mean_price, np.log1p(count)], axis=1).astype(np.float32)
        return {
            "history": history_items,
            "history_categories": torch.from_numpy(self._item_category[rows]).to(history_items.device),
            "history_price": torch.from_numpy(price).to(history_items.device),
        }

    def encode_users(
        self, users: pd.DataFrame, history: Sequence[Sequence[str]] | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensors for UserTower(**...); `history` holds each row's recent item ids, oldest first."""
        genders = [
            self.gender_index.get(str(g), OOV) if isinstance(g, str) else OOV for g in _column(users, schema.GENDER)
        ]
        tokens = [_tokens(p, schema.PREFERENCE_SEPARATOR) for p in _column(users, schema.PREFERENCES)]
        preferences = [[self.preference_index[t] for t in row if t in self.preference_index] for row in tokens]
        histories = [[] for _ in range(len(users))] if history is None else history
        history_rows = [[i for i in self.item_indices(list(items)).tolist() if i != OOV] for items in histories]
        return {
            "user": torch.from_numpy(self.user_indices(_column(users, schema.USER_ID).tolist())),
            "gender": torch.tensor(genders, dtype=torch.int64),
            "age": torch.from_numpy(age_buckets(_column(users, schema.AGE))),
            "preferences": _pad(preferences, self.max_preferences),
            **self.history_features(_pad(history_rows, MAX_HISTORY)),
        }

    def relative_prices(self, items: pd.DataFrame) -> np.ndarray:
        """log price standardised within the item's deepest category (global stats for unknown ones); NaN if none."""
        if self.price_column is None:
            return np.full(len(items), np.nan)
        log_price = _numeric(_column(items, self.price_column), log=True)
        stats = [
            self.category_price.get(c, self.category_price[""])
            for c in deepest_categories(_column(items, schema.CATEGORY))
        ]
        mean, std = np.array(stats, dtype=np.float64).reshape(len(items), 2).T
        return (log_price - mean) / std

    def standardised_numerics(self, items: pd.DataFrame) -> np.ndarray:
        """[n, len(numeric_columns)] standardised values, missing ones at the mean (0)."""
        out = np.zeros((len(items), len(self.numeric_columns)), dtype=np.float32)
        for j, name in enumerate(self.numeric_columns):
            raw = _numeric(_column(items, name), NUMERIC_COLUMNS[name])
            out[:, j] = np.nan_to_num((raw - self.numeric_mean[j]) / self.numeric_std[j], nan=0.0)
        return out

    def relative_numerics(self, items: pd.DataFrame, deepest: list[str]) -> np.ndarray:
        """Standardised numerics minus their category's mean (0 for unknown categories): cheap or popular *for
        its category* is what separates items a category fan chooses between."""
        zero = [0.0] * len(self.numeric_columns)
        means = np.array([self.category_numerics.get(c, zero) for c in deepest], dtype=np.float32)
        return self.standardised_numerics(items) - means.reshape(len(items), len(self.numeric_columns))

    def encode_items(self, items: pd.DataFrame, text_cache: Path | None = None) -> dict[str, torch.Tensor]:
        """Tensors for ItemTower(**...); missing features become OOV tokens, mean numerics, zero text."""
        item = self.item_indices(_column(items, schema.ITEM_ID).tolist())
        categories = [
            [self.category_index.get(token, OOV) for token in category_path_tokens(c)]
            for c in _column(items, schema.CATEGORY)
        ]
        category = np.zeros((len(items), CATEGORY_LEVELS), dtype=np.int64)
        for i, row in enumerate(categories):
            category[i, : len(row)] = row
        deepest = deepest_categories(_column(items, schema.CATEGORY))
        numerics = np.concatenate([self.standardised_numerics(items), self.relative_numerics(items, deepest)], axis=1)
        if self.price_column is not None:
            relative_price = np.nan_to_num(self.relative_prices(items), nan=0.0)
            numerics = np.concatenate([numerics, relative_price[:, None]], axis=1)
        numerics = numerics.astype(np.float32)
        text = np.zeros((len(items), schema.TEXT_EMBEDDING_DIM if self.use_text else 0), dtype=np.float32)
        if self.use_text and len(items):
            texts = item_texts(items)
            present = np.array([bool(t) for t in texts])
            if present.any():
                text[present] = encode_texts([t for t in texts if t], cache_dir=text_cache)
        return {
            "item": torch.from_numpy(item),
            "category": torch.from_numpy(category),
            "numerics": torch.from_numpy(numerics),
            "text": torch.from_numpy(text),
        }


def _numeric(values: pd.Series, log: bool) -> np.ndarray:
    raw = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.log1p(np.clip(raw, 0, None)) if log else raw


def inputs_off(users: pd.DataFrame, items: pd.DataFrame) -> list[str]:
    """The optional tower inputs the data cannot feed, each with the columns it lacks (missing or all empty)."""
    inputs = (
        ("age", users, (schema.AGE,)),
        ("gender", users, (schema.GENDER,)),
        ("preferences", users, (schema.PREFERENCES,)),
        ("categories", items, (schema.CATEGORY,)),
        ("text", items, (schema.PRODUCT_NAME, schema.ABOUT_PRODUCT)),
        ("prices and ratings", items, tuple(NUMERIC_COLUMNS)),
    )
    return [
        f"{name} (no {' / '.join(columns)})"
        for name, frame, columns in inputs
        if not any(column in frame.columns and frame[column].notna().any() for column in columns)
    ]


def recent_positive_items(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's latest MAX_HISTORY positive item ids, oldest first (what the user tower pools)."""
    positives = interactions[positive_mask(interactions)]
    positives = positives.sort_values([schema.USER_ID, schema.TIMESTAMP], kind="stable")
    tail = positives.groupby(schema.USER_ID, sort=False).tail(MAX_HISTORY)
    return {str(u): [str(i) for i in group] for u, group in tail.groupby(schema.USER_ID, sort=True)[schema.ITEM_ID]}


def _category_price_stats(items: pd.DataFrame, price_column: str) -> dict[str, list[float]]:
    log_price = pd.Series(_numeric(items[price_column], log=True), index=items.index)
    deepest = pd.Series(deepest_categories(_column(items, schema.CATEGORY)), index=items.index)
    frame = pd.DataFrame({"category": deepest, "log_price": log_price}).dropna()
    overall = [float(frame["log_price"].mean()), float(frame["log_price"].std(ddof=0)) or 1.0]
    stats = {"": overall}
    for category, group in frame.groupby("category"):
        if category and len(group) >= 2:
            stats[str(category)] = [float(group["log_price"].mean()), float(group["log_price"].std(ddof=0)) or 1.0]
    return stats


def fit_feature_space(users: pd.DataFrame, items: pd.DataFrame, positives: pd.DataFrame) -> FeatureSpace:
    """Vocabularies from the training positives (ids) and the user / item tables (features)."""
    preference_lists = [_tokens(p, schema.PREFERENCE_SEPARATOR) for p in _column(users, schema.PREFERENCES)]
    numeric_columns, means, stds = [], [], []
    for name, log in NUMERIC_COLUMNS.items():
        if name not in items.columns:
            continue
        raw = _numeric(items[name], log)
        if np.isfinite(raw).sum() < 2:
            continue
        numeric_columns.append(name)
        means.append(float(np.nanmean(raw)))
        stds.append(float(np.nanstd(raw)) or 1.0)
    price_column = next((c for c in PRICE_COLUMNS if c in numeric_columns), None)
    deepest = np.array(deepest_categories(_column(items, schema.CATEGORY)), dtype=object)
    item_ids = sorted(positives[schema.ITEM_ID].astype(str).unique())
    space = FeatureSpace(
        user_ids=sorted(positives[schema.USER_ID].astype(str).unique()),
        item_ids=item_ids,
        genders=sorted({g for g in _column(users, schema.GENDER) if isinstance(g, str)}),
        preferences=sorted({t for tokens in preference_lists for t in tokens}),
        category_tokens=sorted({t for c in _column(items, schema.CATEGORY) for t in category_path_tokens(c)}),
        numeric_columns=numeric_columns,
        numeric_mean=means,
        numeric_std=stds,
        use_text=any(bool(t) for t in item_texts(items)),
        max_preferences=max((len(p) for p in preference_lists), default=1) or 1,
        price_column=price_column,
        category_price=_category_price_stats(items, price_column) if price_column else {},
    )
    standardised = pd.DataFrame(space.standardised_numerics(items)).groupby(deepest).mean().round(6)
    space.category_numerics = {str(c): row.tolist() for c, row in standardised.iterrows()}
    # per known item: deepest category token and relative price, for users' history features
    known = items.assign(**{schema.ITEM_ID: items[schema.ITEM_ID].astype(str)}).drop_duplicates(schema.ITEM_ID)
    known = known.set_index(schema.ITEM_ID).reindex(item_ids).reset_index()
    item_category = [space.category_index.get(c, OOV) for c in deepest_categories(_column(known, schema.CATEGORY))]
    relative = np.nan_to_num(space.relative_prices(known), nan=0.0).round(6)
    return FeatureSpace.from_dict(
        {**space.to_dict(), "item_category": item_category, "item_relative_price": relative.tolist()}
    )


def fit_text_content(text_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [D, CONTENT_DIM]): leading principal components of the text vectors, scaled so
    the projected content has unit variance overall; content = (text - mean) @ projection."""
    mean = text_vectors.mean(axis=0)
    _, _, basis = np.linalg.svd(text_vectors - mean, full_matrices=False)
    projection = np.zeros((text_vectors.shape[1], CONTENT_DIM), dtype=np.float32)
    projection[:, : min(CONTENT_DIM, len(basis))] = basis[:CONTENT_DIM].T
    scale = float(((text_vectors - mean) @ projection).std()) or 1.0
    return mean.astype(np.float32), (projection / scale).astype(np.float32)
