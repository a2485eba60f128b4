"""The item attributes the online path needs, held in memory as column arrays aligned with the item index.

Loaded once per model version (from the Feast online store, in batches) so that filtering a few hundred
candidates is a handful of numpy gathers, not a database round trip per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import schema
from recsys.response_models import ResponseItem

# the item_features the filters and responses read
CATALOGUE_FEATURES = (
    schema.PRODUCT_NAME,
    schema.CATEGORY,
    schema.IMG_LINK,
    schema.ARRIVAL_DATE,
    schema.STOCK_QUANTITY,
    schema.ACTUAL_PRICE,
    schema.DISCOUNTED_PRICE,
)
PRICES = (schema.ACTUAL_PRICE, schema.DISCOUNTED_PRICE)  # optional in from_frame: NaN when absent
FEAST_BATCH = 1000  # entity rows per get_online_features call while loading


@dataclass(frozen=True, eq=False)
class ItemCatalogue:
    """Column arrays; row i describes item_ids[i]. Missing stock reads as 0 and a missing arrival date as never,
    so an item Feast knows nothing about is never shown as available."""

    item_ids: np.ndarray  # object (str)
    product_names: np.ndarray  # object (str)
    categories: tuple[str, ...]  # distinct category paths
    category_codes: np.ndarray  # int32 index into categories, per item
    img_links: np.ndarray  # object (str | None)
    arrival_ns: np.ndarray  # int64 epoch nanoseconds (int64 max when unknown)
    stock: np.ndarray  # int64
    prices: dict[str, np.ndarray]  # ACTUAL_PRICE / DISCOUNTED_PRICE -> float64 per item (NaN when unknown)
    position: dict[str, int]  # item_id -> row

    def __len__(self) -> int:
        return len(self.item_ids)

    def describe(self, rows: Sequence[int], scores: Sequence[float]) -> list[ResponseItem]:
        """The response items for catalogue rows: id, score, name, category path, image link, prices."""
        return [
            ResponseItem(
                item_id=self.item_ids[row],
                score=round(float(score), 6),
                product_name=self.product_names[row],
                category=self.categories[self.category_codes[row]],
                img_link=self.img_links[row],
                actual_price=self._price(schema.ACTUAL_PRICE, row),
                discounted_price=self._price(schema.DISCOUNTED_PRICE, row),
            )
            for row, score in zip(rows, scores, strict=True)
        ]

    def _price(self, name: str, row: int) -> float | None:
        value = float(self.prices[name][row])
        return None if np.isnan(value) else value

    def positions(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of the given ids that the catalogue knows (unknown ids are skipped)."""
        rows = [self.position[i] for i in item_ids if i in self.position]
        return np.asarray(rows, dtype=np.int64)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ItemCatalogue:
        """Build from a frame with item_id and the CATALOGUE_FEATURES columns (any may hold nulls; the PRICES
        columns may be absent)."""
        ids = frame[schema.ITEM_ID].astype(str).to_numpy(dtype=object)
        category = frame[schema.CATEGORY].fillna("").astype(str)
        codes, uniques = pd.factorize(category, sort=True)
        arrival = pd.to_datetime(frame[schema.ARRIVAL_DATE], utc=True, errors="coerce")
        never = np.iinfo(np.int64).max
        raw_ns = arrival.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
        arrival_ns = np.where(arrival.isna().to_numpy(), never, raw_ns)
        stock = pd.to_numeric(frame[schema.STOCK_QUANTITY], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
        img = frame[schema.IMG_LINK].astype(object).where(frame[schema.IMG_LINK].notna(), None)
        prices = {
            name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            if name in frame.columns
            else np.full(len(frame), np.nan)
            for name in PRICES
        }
        return cls(
            item_ids=ids,
            product_names=frame[schema.PRODUCT_NAME].fillna("").astype(str).to_numpy(dtype=object),
            categories=tuple(str(c) for c in uniques),
            category_codes=codes.astype(np.int32),
            img_links=img.to_numpy(dtype=object),
            arrival_ns=arrival_ns.astype(np.int64),
            stock=stock,
            prices=prices,
            position={item_id: row for row, item_id in enumerate(ids)},
        )


def load_from_feast(store, item_ids: Sequence[str], batch: int = FEAST_BATCH) -> ItemCatalogue:
    """Read the catalogue columns for `item_ids` from the Feast online store (item_features view), in batches.

    arrival_date is item_features' event time, so it comes back as the event timestamp of its features
    (0 -> unknown when Feast holds no row for the item).
    """
    from feast.online_response import TIMESTAMP_POSTFIX

    names = [name for name in CATALOGUE_FEATURES if name != schema.ARRIVAL_DATE]
    refs = [f"{schema.VIEW_ITEM_FEATURES}:{name}" for name in names]
    arrival_ts = schema.STOCK_QUANTITY + TIMESTAMP_POSTFIX
    parts = []
    for start in range(0, len(item_ids), batch):
        rows = [{schema.ITEM_ID: item_id} for item_id in item_ids[start : start + batch]]
        response = store.get_online_features(features=refs, entity_rows=rows).to_dict(include_event_timestamps=True)
        part = pd.DataFrame({name: response[name] for name in [schema.ITEM_ID, *names]})
        seconds = pd.Series(response[arrival_ts], dtype="float64")
        part[schema.ARRIVAL_DATE] = pd.to_datetime(seconds.where(seconds > 0), unit="s", utc=True)
        parts.append(part)
    columns = [schema.ITEM_ID, *CATALOGUE_FEATURES]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return ItemCatalogue.from_frame(frame[columns])
