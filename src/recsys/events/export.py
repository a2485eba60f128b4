"""The event log as training data: merged into a data set's parquet files before training.

Each event becomes an interaction whose interaction_id is its event_id, so merging twice (or merging a log
that a data set already holds in part) adds nothing twice. Events whose item the data set does not carry (it
left the catalogue) stay in the log and are only counted; users the data set does not know get a row holding
their id (and signup date = first event), so training and Feast see them as users.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys import db, schema
from recsys.events.log import read_event_log


@dataclass(frozen=True)
class MergeReport:
    logged: int  # events in the log
    added: int  # interactions added to the data set now
    already_present: int  # events the data set already held (by interaction_id)
    unknown_items: int  # events for items the data set lacks: kept in the log, not merged
    new_users: int  # users added to the users file


def events_as_interactions(log: pd.DataFrame) -> pd.DataFrame:
    """Event log rows -> interactions rows with schema.INTERACTION_DTYPES (no reviews)."""
    frame = pd.DataFrame(
        {
            schema.INTERACTION_ID: log[schema.EVENT_ID],
            schema.USER_ID: log[schema.USER_ID],
            schema.ITEM_ID: log[schema.ITEM_ID],
            schema.TIMESTAMP: pd.to_datetime(log[schema.TIMESTAMP], utc=True),
            schema.INTERACTION_TYPE: log[schema.INTERACTION_TYPE],
            schema.RATING: pd.to_numeric(log[schema.RATING]),
            schema.QUANTITY: pd.to_numeric(log[schema.QUANTITY]),
            schema.REVIEW_TITLE: None,
            schema.REVIEW_CONTENT: None,
        }
    )
    return frame.astype(schema.INTERACTION_DTYPES)


def merge_events_into_dataset(data_dir: Path, log: pd.DataFrame | None = None) -> MergeReport:
    """Merge the event log (read from the database unless given) into the interactions and users files of
    `data_dir`, in place and idempotently; each file is replaced whole (write, then rename)."""
    data_dir = Path(data_dir)
    if log is None:
        with db.connect() as conn:
            log = read_event_log(conn)
    users_path, items_path, interactions_path = (data_dir / name for name in schema.DATA_FILES)
    items = pd.read_parquet(items_path, columns=[schema.ITEM_ID])
    interactions = pd.read_parquet(interactions_path)
    if schema.INTERACTION_ID not in interactions.columns:  # a minimal data set: ids are what dedups a merge
        interactions[schema.INTERACTION_ID] = pd.array([None] * len(interactions), dtype="string")
    events = events_as_interactions(log)
    known_item = events[schema.ITEM_ID].isin(items[schema.ITEM_ID].astype(str))
    present_ids = interactions.get(schema.INTERACTION_ID, pd.Series(dtype="string")).dropna().astype(str)
    present = events[schema.INTERACTION_ID].isin(present_ids)
    added = events[known_item & ~present]
    new_users = 0
    if not added.empty:
        new_users = _add_unknown_users(users_path, added)
        # only the columns the file has: e.g. an interaction_type column would turn its untyped rows into non-positives
        merged = pd.concat([interactions, added[[c for c in added.columns if c in interactions.columns]]])
        _write_parquet(_restore_dtypes(merged, interactions), interactions_path)
    return MergeReport(
        logged=len(events),
        added=len(added),
        already_present=int((known_item & present).sum()),
        unknown_items=int((~known_item).sum()),
        new_users=new_users,
    )


def _add_unknown_users(users_path: Path, interactions: pd.DataFrame) -> int:
    users = pd.read_parquet(users_path)
    first_seen = interactions.groupby(schema.USER_ID)[schema.TIMESTAMP].min()
    unknown = first_seen[~first_seen.index.isin(users[schema.USER_ID].astype(str))]
    if unknown.empty:
        return 0
    rows = pd.DataFrame({schema.USER_ID: pd.array(unknown.index, dtype="string")})
    if schema.SIGNUP_DATE in users.columns:
        rows[schema.SIGNUP_DATE] = unknown.reset_index(drop=True)
    merged = pd.concat([users, rows], ignore_index=True)
    _write_parquet(_restore_dtypes(merged, users), users_path)
    return len(rows)


def _restore_dtypes(merged: pd.DataFrame, original: pd.DataFrame) -> pd.DataFrame:
    """Keep each column's dtype, switching integer columns to nullable Int64 where the new rows hold nulls."""
    out = merged.reset_index(drop=True)
    for column, dtype in original.dtypes.items():
        if pd.api.types.is_integer_dtype(dtype) and out[column].isna().any():
            out[column] = out[column].astype("Int64")
        elif out[column].dtype != dtype:
            out[column] = out[column].astype(dtype)
    return out


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write then rename, so a reader (Feast, a training step) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
