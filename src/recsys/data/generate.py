"""Synthetic users, items and interactions with a planted, measurable and learnable signal.

Each user prefers 1-5 leaf categories and one price tier, stable over time. An interaction follows that taste
with probability `preference_strength` (a preferred leaf, mostly the user's tier, then an item of that bucket
by popularity) and otherwise browses the whole catalogue by a long-tailed (Zipf-like) popularity. So a user's
later interactions are predictable from earlier ones, beyond the category alone (the tier), and
`preference_strength=0` leaves only popularity: the preferred share falls to the uniform share.

Everything is vectorised numpy on one seeded generator per table; the same seed and `as_of` give identical
files. The three parquet files are written to temporary names first and renamed at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import schema
from recsys.data import catalog

DEFAULT_PREFERENCE_STRENGTH = 0.85
TIER_FOCUS = 0.95  # share of taste-driven choices that stay in the user's own price tier
TIER_SHARES = (0.3, 0.35, 0.22, 0.13)  # budget, standard, premium, luxury
ZIPF_EXPONENT = 0.6  # item popularity ~ rank^-a
FUTURE_ITEM_SHARE = 0.05  # items announced but not yet arrived (no interactions, filtered when serving)
OUT_OF_STOCK_SHARE = 0.08
CATALOGUE_DAYS = 3 * 365  # items arrived and users signed up within this window before as_of
MAX_PREFERENCES = 5
# interaction type mix when following the taste vs browsing; order as schema.INTERACTION_TYPES
# (positive_view, negative_view, cart, purchase, rate): views > carts > purchases > rates either way
TASTE_TYPE_MIX = (0.56, 0.04, 0.20, 0.13, 0.07)
BROWSE_TYPE_MIX = (0.52, 0.32, 0.09, 0.05, 0.02)
RATING_BONUS_PREFERRED, RATING_PENALTY_OTHER = 0.7, -0.6

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


class GenerationError(ValueError):
    """Bad arguments or an unusable output folder; nothing has been written."""


@dataclass(frozen=True)
class GenerationReport:
    n_users: int
    n_items: int
    n_interactions: int
    preferred_share: float  # interactions whose item lies in one of the user's preferred leaves
    uniform_share: float  # the same share expected if items were chosen uniformly among available ones
    type_counts: dict[str, int]
    seconds: float
    paths: dict[str, Path] = field(default_factory=dict)  # schema.*_FILE -> written path


def generate(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int,
    out: Path,
    preference_strength: float = DEFAULT_PREFERENCE_STRENGTH,
    as_of: datetime | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> GenerationReport:
    """Write schema.DATA_FILES into `out` and report the planted signal.

    `as_of` is "now" for the data (default: today 00:00 UTC): interactions lie before it, some items arrive
    after it. `on_stage` is called with a short description before each step (progress display).
    """
    started = time.perf_counter()
    out = Path(out)
    _validate(n_users, n_items, n_interactions, seed, preference_strength)
    _prepare_out(out)
    as_of_ns = _as_of_ns(as_of)
    stage = on_stage or (lambda _: None)
    items_rng, users_rng, events_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    stage("items")
    items = _make_items(items_rng, n_items, as_of_ns)
    stage("users")
    users = _make_users(users_rng, n_users, as_of_ns, items)
    stage("interactions")
    events = _make_interactions(events_rng, n_interactions, users, items, as_of_ns, preference_strength)
    stage("writing parquet")
    frames = {schema.USERS_FILE: users.frame, schema.ITEMS_FILE: items.frame, schema.INTERACTIONS_FILE: events.frame}
    paths = _write_atomically(out, frames)
    return GenerationReport(
        n_users=n_users,
        n_items=n_items,
        n_interactions=n_interactions,
        preferred_share=events.preferred_share,
        uniform_share=events.uniform_share,
        type_counts=events.frame[schema.INTERACTION_TYPE].value_counts().to_dict(),
        seconds=time.perf_counter() - started,
        paths=paths,
    )


# ----------------------------------------------------------------------------------------------- checks
def _validate(n_users: int, n_items: int, n_interactions: int, seed: int, strength: float) -> None:
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_interactions", n_interactions)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise GenerationError(f"{name} must be a positive integer, got {value!r}")
    if seed < 0:
        raise GenerationError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= strength <= 1.0:
        raise GenerationError(f"preference_strength must lie in [0, 1], got {strength}")


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GenerationError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenerationError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise GenerationError(f"output folder {out} is not writable")


def _as_of_ns(as_of: datetime | None) -> int:
    if as_of is None:
        as_of = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elif as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return int(pd.Timestamp(as_of).value)


# ----------------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class _Items:
    frame: pd.DataFrame
    leaf: np.ndarray  # index into catalog.LEAVES
    tier: np.ndarray  # index into catalog.TIERS
    popularity: np.ndarray  # Zipf weights, > 0
    quality: np.ndarray  # latent 1..5, drives rating and review stars
    arrival_ns: np.ndarray
    available: np.ndarray  # arrived by as_of


def _make_items(rng: np.random.Generator, n: int, as_of_ns: int) -> _Items:
    leaves, tiers = catalog.LEAVES, catalog.TIERS
    n_leaves = len(leaves)
    # uneven category sizes, but every leaf gets an item while there are enough items
    leaf_weights = rng.gamma(2.0, size=n_leaves)
    covered = rng.permutation(n_leaves)[: min(n, n_leaves)]
    rest = rng.choice(n_leaves, size=n - covered.size, p=leaf_weights / leaf_weights.sum())
    leaf = rng.permutation(np.concatenate([covered, rest]))
    tier = rng.choice(len(tiers), size=n, p=TIER_SHARES)
    popularity = (rng.permutation(n) + 1.0) ** -ZIPF_EXPONENT

    median = np.array([leaf_.median_price for leaf_ in leaves])[leaf]
    factor = np.array([t.price_factor for t in tiers])[tier]
    actual = np.maximum(np.round(median * factor * rng.lognormal(0.0, 0.25, n), 2), 0.99)
    discount_steps = np.array([0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70], dtype=float)
    discount_p = np.array([35, 10, 12, 9, 9, 7, 7, 5, 3, 2, 1], dtype=float)
    discount = rng.choice(discount_steps, size=n, p=discount_p / discount_p.sum())
    discounted = np.round(actual * (1 - discount / 100), 2)
    quality = np.clip(rng.normal(4.0, 0.45, n), 1.0, 5.0)
    rating_count = np.floor(popularity / popularity.mean() * 25 * rng.lognormal(0.0, 0.6, n)).astype(np.int64)

    arrival_ns = as_of_ns - rng.integers(NS_PER_DAY, CATALOGUE_DAYS * NS_PER_DAY, n) // NS_PER_S * NS_PER_S
    future = rng.choice(n, size=int(n * FUTURE_ITEM_SHARE), replace=False)
    arrival_ns[future] = as_of_ns + rng.integers(NS_PER_DAY, 60 * NS_PER_DAY, future.size) // NS_PER_S * NS_PER_S
    stock = rng.negative_binomial(2, 0.05, n).astype(np.int64) + 1
    stock[rng.random(n) < OUT_OF_STOCK_SHARE] = 0

    ids = _ids("i", n)
    names, abouts = _item_texts(rng, leaf, tier)
    frame = pd.DataFrame(
        {
            schema.ITEM_ID: ids,
            schema.PRODUCT_NAME: names,
            schema.CATEGORY: np.array([leaf_.path for leaf_ in leaves], dtype=object)[leaf],
            schema.ABOUT_PRODUCT: abouts,
            schema.ACTUAL_PRICE: actual,
            schema.DISCOUNTED_PRICE: discounted,
            schema.DISCOUNT_PERCENTAGE: discount,
            schema.RATING: np.round(quality, 1),
            schema.RATING_COUNT: rating_count,
            schema.ARRIVAL_DATE: pd.to_datetime(arrival_ns, utc=True),
            schema.STOCK_QUANTITY: stock,
            schema.IMG_LINK: [f"https://images.example.com/products/{i}.jpg" for i in ids],
            schema.PRODUCT_LINK: [f"https://shop.example.com/dp/{i}" for i in ids],
        }
    ).astype(schema.ITEM_DTYPES)
    return _Items(frame, leaf, tier, popularity, quality, arrival_ns, arrival_ns <= as_of_ns)


def _item_texts(rng: np.random.Generator, leaf: np.ndarray, tier: np.ndarray) -> tuple[list[str], list[str]]:
    n = leaf.size
    picks = rng.integers(0, 1 << 30, size=(6, n))  # synonym, brand, adjective, feature, use, model number
    names, abouts = [], []
    for k in range(n):
        lf, tr = catalog.LEAVES[leaf[k]], catalog.TIERS[tier[k]]
        synonym = lf.synonyms[picks[0, k] % len(lf.synonyms)]
        brand = tr.brands[picks[1, k] % len(tr.brands)]
        adjective = tr.adjectives[picks[2, k] % len(tr.adjectives)]
        names.append(catalog.product_name(lf, brand, adjective, synonym, 100 + picks[5, k] % 900))
        abouts.append(
            catalog.product_description(
                lf,
                tr,
                brand,
                adjective,
                synonym,
                catalog.FEATURES[picks[3, k] % len(catalog.FEATURES)],
                catalog.USES[picks[4, k] % len(catalog.USES)],
            )
        )
    return names, abouts


# ----------------------------------------------------------------------------------------------- users
@dataclass(frozen=True)
class _Users:
    frame: pd.DataFrame
    preferences: np.ndarray  # (n_users, MAX_PREFERENCES) leaf indices, -1 padded
    n_preferences: np.ndarray
    tier: np.ndarray
    signup_ns: np.ndarray


def _make_users(rng: np.random.Generator, n: int, as_of_ns: int, items: _Items) -> _Users:
    n_leaves = len(catalog.LEAVES)
    leaf_size = np.bincount(items.leaf[items.available], minlength=n_leaves)
    choosable = leaf_size > 0  # a preference for a leaf with nothing to buy could never show
    n_prefs = np.minimum(rng.integers(1, MAX_PREFERENCES + 1, n), choosable.sum())
    # bigger categories attract more fans: Gumbel top-k draws distinct leaves with probability ~ size
    keys = np.where(choosable, np.log(np.maximum(leaf_size, 1)), -np.inf) + rng.gumbel(size=(n, n_leaves))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :MAX_PREFERENCES]
    preferences = np.where(np.arange(MAX_PREFERENCES) < n_prefs[:, None], top, -1)
    tier = rng.choice(len(catalog.TIERS), size=n, p=TIER_SHARES)
    signup_ns = as_of_ns - rng.integers(7 * NS_PER_DAY, CATALOGUE_DAYS * NS_PER_DAY, n) // NS_PER_S * NS_PER_S

    names = np.array([leaf.name for leaf in catalog.LEAVES], dtype=object)
    first = rng.integers(0, len(catalog.FIRST_NAMES), n)
    last = rng.integers(0, len(catalog.LAST_NAMES), n)
    frame = pd.DataFrame(
        {
            schema.USER_ID: _ids("u", n),
            schema.USER_NAME: [
                f"{catalog.FIRST_NAMES[a]} {catalog.LAST_NAMES[b]}" for a, b in zip(first, last, strict=True)
            ],
            schema.SIGNUP_DATE: pd.to_datetime(signup_ns, utc=True),
            schema.PREFERENCES: [schema.PREFERENCE_SEPARATOR.join(names[row[row >= 0]]) for row in preferences],
            schema.AGE: np.clip(np.round(rng.normal(37, 12, n)), 18, 85).astype(np.int64),
            schema.GENDER: rng.choice(np.array(["F", "M", "X"], dtype=object), size=n, p=(0.49, 0.48, 0.03)),
        }
    ).astype(schema.USER_DTYPES)
    return _Users(frame, preferences, n_prefs, tier, signup_ns)


# ----------------------------------------------------------------------------------------------- interactions
@dataclass(frozen=True)
class _Interactions:
    frame: pd.DataFrame
    preferred_share: float
    uniform_share: float


class _BucketSampler:
    """Draws items by weight within a bucket (e.g. leaf x tier), many draws at once via one cumsum."""

    def __init__(self, bucket_of_item: np.ndarray, weights: np.ndarray, items: np.ndarray, n_buckets: int):
        order = np.argsort(bucket_of_item[items], kind="stable")
        self.items = items[order]
        self.cum = np.cumsum(weights[self.items])
        sorted_buckets = bucket_of_item[self.items]
        self.start = np.searchsorted(sorted_buckets, np.arange(n_buckets), side="left")
        self.stop = np.searchsorted(sorted_buckets, np.arange(n_buckets), side="right")
        cum0 = np.concatenate([[0.0], self.cum])
        self.base, self.total = cum0[self.start], cum0[self.stop] - cum0[self.start]

    def sample(self, rng: np.random.Generator, buckets: np.ndarray) -> np.ndarray:
        target = self.base[buckets] + rng.random(buckets.size) * self.total[buckets]
        pos = np.searchsorted(self.cum, target, side="right")
        return self.items[np.clip(pos, self.start[buckets], np.maximum(self.stop[buckets] - 1, 0))]


def _make_interactions(
    rng: np.random.Generator, n: int, users: _Users, items: _Items, as_of_ns: int, strength: float
) -> _Interactions:
    n_users, n_tiers = len(users.tier), len(catalog.TIERS)
    available = np.flatnonzero(items.available)
    # every user gets one interaction while there are enough; activity is long-tailed on top
    activity = rng.lognormal(0.0, 1.0, n_users)
    first = np.arange(min(n, n_users))
    user = np.concatenate([first, rng.choice(n_users, size=n - first.size, p=activity / activity.sum())])
    user = rng.permutation(user)

    follows_taste = rng.random(n) < strength
    pick = (rng.random(n) * users.n_preferences[user]).astype(np.int64)
    leaf = users.preferences[user, pick]
    own_tier = rng.random(n) < TIER_FOCUS
    tier = np.where(own_tier, users.tier[user], rng.integers(0, n_tiers, n))

    by_bucket = _BucketSampler(
        items.leaf * n_tiers + items.tier, items.popularity, available, len(catalog.LEAVES) * n_tiers
    )
    by_leaf = _BucketSampler(items.leaf, items.popularity, available, len(catalog.LEAVES))
    everything = _BucketSampler(np.zeros_like(items.leaf), items.popularity, available, 1)
    bucket = leaf * n_tiers + tier
    in_bucket = by_bucket.sample(rng, bucket)
    in_leaf = by_leaf.sample(rng, leaf)  # the tier bucket may be empty in small catalogues
    browsed = everything.sample(rng, np.zeros(n, dtype=np.int64))
    item = np.where(~follows_taste, browsed, np.where(by_bucket.total[bucket] > 0, in_bucket, in_leaf))

    preferred = (users.preferences[user] == items.leaf[item][:, None]).any(axis=1)
    leaf_size = np.bincount(items.leaf[available], minlength=len(catalog.LEAVES))
    user_uniform = np.where(users.preferences >= 0, leaf_size[users.preferences], 0).sum(axis=1) / available.size

    type_index = np.where(follows_taste, _draw(rng, TASTE_TYPE_MIX, n), _draw(rng, BROWSE_TYPE_MIX, n))
    kind = {name: schema.INTERACTION_TYPES.index(name) for name in schema.INTERACTION_TYPES}
    is_rate = type_index == kind[schema.RATE]
    stars = np.clip(
        np.round(
            items.quality[item]
            + np.where(preferred, RATING_BONUS_PREFERRED, RATING_PENALTY_OTHER)
            + rng.normal(0.0, 0.6, n)
        ),
        1,
        5,
    )
    has_quantity = (type_index == kind[schema.PURCHASE]) | (type_index == kind[schema.CART])
    quantity = rng.geometric(0.65, n)

    # after signup and after the item arrived, never after as_of
    earliest = np.maximum(users.signup_ns[user], items.arrival_ns[item])
    timestamp = (earliest + (rng.random(n) * (as_of_ns - earliest)).astype(np.int64)) // NS_PER_S * NS_PER_S
    order = np.lexsort((user, timestamp))
    user, item, type_index, timestamp = user[order], item[order], type_index[order], timestamp[order]
    is_rate, stars, has_quantity, quantity = is_rate[order], stars[order], has_quantity[order], quantity[order]

    titles, contents = _reviews(rng, items.leaf[item[is_rate]], stars[is_rate].astype(np.int64))
    review_title = np.full(n, None, dtype=object)
    review_content = np.full(n, None, dtype=object)
    review_title[is_rate], review_content[is_rate] = titles, contents
    frame = pd.DataFrame(
        {
            schema.INTERACTION_ID: pd.array(_ids("x", n), dtype="string"),
            schema.USER_ID: pd.array(users.frame[schema.USER_ID].to_numpy(dtype=object)[user], dtype="string"),
            schema.ITEM_ID: pd.array(items.frame[schema.ITEM_ID].to_numpy(dtype=object)[item], dtype="string"),
            schema.TIMESTAMP: pd.to_datetime(timestamp, utc=True),
            schema.INTERACTION_TYPE: pd.array(
                np.array(schema.INTERACTION_TYPES, dtype=object)[type_index], dtype="string"
            ),
            schema.RATING: pd.arrays.FloatingArray(np.where(is_rate, stars, 0.0), ~is_rate),
            schema.QUANTITY: pd.arrays.IntegerArray(quantity.astype(np.int64), ~has_quantity),
            schema.REVIEW_TITLE: pd.array(review_title, dtype="string"),
            schema.REVIEW_CONTENT: pd.array(review_content, dtype="string"),
        }
    ).astype(schema.INTERACTION_DTYPES, copy=False)
    return _Interactions(frame, float(preferred.mean()), float(user_uniform[user].mean()))


def _draw(rng: np.random.Generator, mix: tuple[float, ...], n: int) -> np.ndarray:
    cum = np.cumsum(mix) / sum(mix)
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(mix) - 1)


def _reviews(rng: np.random.Generator, leaf: np.ndarray, stars: np.ndarray) -> tuple[list[str], list[str]]:
    pick = rng.integers(0, 1 << 30, leaf.size)
    titles = [catalog.REVIEW_TITLES[s][p % len(catalog.REVIEW_TITLES[s])] for s, p in zip(stars, pick, strict=True)]
    contents = [
        catalog.REVIEW_BODIES[s].format(noun=catalog.LEAVES[lf].synonyms[0]) for s, lf in zip(stars, leaf, strict=True)
    ]
    return titles, contents


# ----------------------------------------------------------------------------------------------- output
def _ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(n)))
    return list(map(f"{prefix}%0{width}d".__mod__, range(1, n + 1)))


def _write_atomically(out: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """All files as temporaries first, then renames: a failure leaves no partial or mixed set behind."""
    temporaries: dict[str, Path] = {}
    try:
        for name, frame in frames.items():
            tmp = out / f".{name}.{os.getpid()}.tmp"
            temporaries[name] = tmp
            frame.to_parquet(tmp, index=False)
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    paths = {}
    for name, tmp in temporaries.items():
        paths[name] = out / name
        os.replace(tmp, paths[name])
    return paths
