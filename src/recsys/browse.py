"""Read-only lookups for clients that browse the catalogue (the storefront): known users, one user's profile and
recent activity, one item's details, the category paths. Served by the predictor next to V1 predict, over the
same served version, pool and feature store (recsys.serving_state), so a client never needs the database.

- known users: the users the served model was trained on (they get recommendations without a cold start);
- a user's recent activity: their newest logged events (POST /v1/events) and then the latest positives the
  model saw in training, newest first, plus how many items their history holds per kind;
- an item: every item_features column of the Feast online store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from psycopg import sql

from recsys import history, schema
from recsys.request_models import MAX_ID_CHARS
from recsys.serving_state import ServedVersion, ServingState

DEFAULT_USERS = 100
MAX_USERS = 1000
RECENT_ITEMS = 12  # activity entries per user
PROFILE_FEATURES = (schema.USER_NAME, schema.AGE, schema.GENDER, schema.PREFERENCES)
ITEM_DETAIL_FEATURES = (
    schema.PRODUCT_NAME,
    schema.CATEGORY,
    schema.ABOUT_PRODUCT,
    schema.ACTUAL_PRICE,
    schema.DISCOUNTED_PRICE,
    schema.DISCOUNT_PERCENTAGE,
    schema.RATING,
    schema.RATING_COUNT,
    schema.STOCK_QUANTITY,
    schema.IMG_LINK,
    schema.PRODUCT_LINK,
)
HISTORY_KINDS = ("purchased", "carted", "viewed")  # recsys.history.UserHistory's fields


class NotFound(LookupError):
    """The user or item is unknown to the served version (HTTP 404)."""


def check_id(field: str, value: str) -> str:
    """Reject, before any query, an id no user or item can have (ValueError naming the field: HTTP 400)."""
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise ValueError(f"{field}: expected 1..{MAX_ID_CHARS} characters")
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # Postgres rejects both
        raise ValueError(f"{field}: must not contain NUL characters or lone surrogates")
    return value


def _plain(value: Any) -> Any:
    """Feast / numpy values -> JSON values (NaN and missing -> None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    return value


def _features(state: ServingState, view: str, key: str, ids: list[str], names: tuple[str, ...]) -> list[dict]:
    refs = [f"{view}:{name}" for name in names]
    table = state.store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
    return [{name: _plain(table[name][row]) for name in names} for row in range(len(ids))]


def list_users(state: ServingState, limit: int = DEFAULT_USERS) -> dict[str, Any]:
    """The first `limit` known users (by id) with their profile; `total` counts them all."""
    if not 1 <= limit <= MAX_USERS:
        raise ValueError(f"limit: expected 1..{MAX_USERS}, got {limit}")
    version = state.current()
    known = sorted(version.model.recent_items)
    ids = known[:limit]
    with state.answering():
        profiles = _features(state, schema.VIEW_USER_FEATURES, schema.USER_ID, ids, PROFILE_FEATURES) if ids else []
    users = [{schema.USER_ID: user_id, **profile} for user_id, profile in zip(ids, profiles, strict=True)]
    return {"users": users, "total": len(known), schema.MODEL_VERSION: version.model_version}


def item_card(version: ServedVersion, item_id: str) -> dict[str, Any] | None:
    """What a list of items shows: id, name, category path, image link (None for an item not served)."""
    row = version.catalogue.position.get(item_id)
    if row is None:
        return None
    described = version.catalogue.describe([row], [0.0])[0]
    return {key: value for key, value in described.items() if key != "score"}


def _recent_events(state: ServingState, user_id: str, limit: int) -> list[tuple[str, str, datetime]]:
    """(item_id, interaction_type, timestamp) of the user's newest logged events."""
    with state.connection() as conn:
        if conn.execute("SELECT to_regclass(%s)", (schema.EVENT_LOG_TABLE,)).fetchone()[0] is None:
            return []  # no event was ever logged
        query = sql.SQL("SELECT {item}, {kind}, {ts} FROM {t} WHERE {user} = %s ORDER BY {ts} DESC LIMIT %s").format(
            item=sql.Identifier(schema.ITEM_ID),
            kind=sql.Identifier(schema.INTERACTION_TYPE),
            ts=sql.Identifier(schema.TIMESTAMP),
            t=sql.Identifier(schema.EVENT_LOG_TABLE),
            user=sql.Identifier(schema.USER_ID),
        )
        return [tuple(row) for row in conn.execute(query, (user_id, limit)).fetchall()]


def user_details(state: ServingState, user_id: str) -> dict[str, Any]:
    """Profile, recent activity (newest first) and history sizes of one user; NotFound when nothing is known."""
    check_id(schema.USER_ID, user_id)
    version = state.current()
    with state.answering():
        [profile] = _features(state, schema.VIEW_USER_FEATURES, schema.USER_ID, [user_id], PROFILE_FEATURES)
        events = _recent_events(state, user_id, RECENT_ITEMS)
        with state.connection() as conn:
            past = history.read_user_history(conn, [user_id]).get(user_id)
    trained = version.model.recent_items.get(user_id)
    if trained is None and past is None and not events and all(v is None for v in profile.values()):
        raise NotFound(f"user_id: unknown user {user_id!r}")
    recent: list[dict[str, Any]] = []  # each item once, at its newest interaction
    seen: set[str] = set()
    activity = [
        *((i, kind, _plain(moment)) for i, kind, moment in events),
        *((i, None, None) for i in reversed(trained or [])),
    ]
    for item_id, kind, moment in activity:
        card = item_card(version, item_id)
        if card is not None and item_id not in seen and len(recent) < RECENT_ITEMS:
            seen.add(item_id)
            recent.append(card | {schema.INTERACTION_TYPE: kind, schema.TIMESTAMP: moment})
    counts = {kind: len(getattr(past, kind)) if past else 0 for kind in HISTORY_KINDS}
    return {
        schema.USER_ID: user_id,
        **profile,
        "known": trained is not None,
        "recent": recent,
        "history_counts": counts,
        schema.MODEL_VERSION: version.model_version,
    }


def item_details(state: ServingState, item_id: str) -> dict[str, Any]:
    """Every item_features column of an item the served version holds; NotFound otherwise."""
    check_id(schema.ITEM_ID, item_id)
    version = state.current()
    if item_id not in version.catalogue.position:
        raise NotFound(f"item_id: unknown item {item_id!r}")
    with state.answering():
        [features] = _features(state, schema.VIEW_ITEM_FEATURES, schema.ITEM_ID, [item_id], ITEM_DETAIL_FEATURES)
    return {schema.ITEM_ID: item_id, **features, schema.MODEL_VERSION: version.model_version}


def category_paths(state: ServingState) -> dict[str, Any]:
    """The distinct 'Department|Group|Leaf' paths of the served catalogue (e.g. to offer preferences)."""
    version = state.current()
    return {"categories": [c for c in version.catalogue.categories if c], schema.MODEL_VERSION: version.model_version}
