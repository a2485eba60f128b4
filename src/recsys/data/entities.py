"""Synthetic items and users: the columns of their files and the hidden traits that drive behaviour.

Hidden item traits: leaf category, price tier, a long-tailed popularity, a co-purchase group (a handful of items
of one leaf that are bought together) and a taste community (the item factor of the latent part: which kind of
shopper buys it, across categories; every item of a group shares the group's community). Hidden user traits: the
price tier and a weight on each of a few communities (the user factor). The declared preferences (1-5 leaves)
are the one trait that is also written to the users file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import schema
from recsys.data import taxonomy

TIER_SHARES = (0.3, 0.35, 0.22, 0.13)  # budget, standard, premium, luxury
ZIPF_EXPONENT = 1.0  # item popularity ~ (rank + ZIPF_HEAD)^-a
ZIPF_HEAD = 3.0  # flattens the very head, as real catalogues have several near-equal best sellers
GROUP_SIZE = 6  # items per co-purchase group (within one leaf)
COMMUNITY_SIZE = 40  # items per latent taste community; each item belongs to one, each user leans towards a few
COMMUNITIES_PER_USER = 3
USER_BLOCK_DRAWS = 2**23  # uniform draws held at once while choosing users' communities (64 MB)
FUTURE_ITEM_SHARE = 0.05  # items announced but not yet arrived (no interactions, filtered when serving)
OUT_OF_STOCK_SHARE = 0.08
CATALOGUE_DAYS = 3 * 365  # users signed up and new items arrived within this window before as_of
BACK_CATALOGUE_SHARE = 0.5  # items on sale since before the window (arrived one window earlier)
MAX_PREFERENCES = 5

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Items:
    frame: pd.DataFrame
    leaf: np.ndarray  # index into taxonomy.LEAVES
    tier: np.ndarray  # index into taxonomy.TIERS
    popularity: np.ndarray  # Zipf weights, > 0
    group: np.ndarray  # co-purchase group, 0..n_groups-1, never spans two leaves
    community: np.ndarray  # 0..n_communities(n_items)-1, the same for every item of a group
    quality: np.ndarray  # latent 1..5, drives rating and review stars
    arrival_ns: np.ndarray
    available: np.ndarray  # arrived by as_of


@dataclass(frozen=True)
class Users:
    frame: pd.DataFrame
    preferences: np.ndarray  # (n_users, MAX_PREFERENCES) leaf indices, -1 padded
    n_preferences: np.ndarray
    tier: np.ndarray
    communities: np.ndarray  # (n_users, COMMUNITIES_PER_USER) distinct community indices
    community_weights: np.ndarray  # same shape, rows sum to 1
    signup_ns: np.ndarray


def n_communities(n_items: int) -> int:
    return max(COMMUNITIES_PER_USER, round(n_items / COMMUNITY_SIZE))


def _random_communities(rng: np.random.Generator, n_users: int, n_comm: int) -> np.ndarray:
    """Per user, COMMUNITIES_PER_USER distinct communities: the positions of the smallest of n_comm uniform draws,
    smallest first. Drawn in blocks of users (the same stream, hence the same result as one [n_users, n_comm]
    draw): at 100k users x 1M items (25,000 communities) that one draw alone was 18.6 GiB."""
    k = COMMUNITIES_PER_USER
    rows = max(1, USER_BLOCK_DRAWS // max(n_comm, 1))
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, rows):
        draws = rng.random((min(rows, n_users - start), n_comm))
        smallest = np.argpartition(draws, k - 1, axis=1)[:, :k] if n_comm > k else np.argsort(draws, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(draws, smallest, axis=1), axis=1, kind="stable")
        out[start : start + len(draws)] = np.take_along_axis(smallest, order, axis=1)
    return out


def make_ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(n)))
    return list(map(f"{prefix}%0{width}d".__mod__, range(1, n + 1)))


# ----------------------------------------------------------------------------------------------- items
def make_items(rng: np.random.Generator, n: int, as_of_ns: int) -> Items:
    leaves, tiers = taxonomy.LEAVES, taxonomy.TIERS
    n_leaves = len(leaves)
    # uneven category sizes, but every leaf gets an item while there are enough items
    leaf_weights = rng.gamma(2.0, size=n_leaves)
    covered = rng.permutation(n_leaves)[: min(n, n_leaves)]
    rest = rng.choice(n_leaves, size=n - covered.size, p=leaf_weights / leaf_weights.sum())
    leaf = rng.permutation(np.concatenate([covered, rest]))
    tier = rng.choice(len(tiers), size=n, p=TIER_SHARES)
    popularity = (rng.permutation(n) + 1.0 + ZIPF_HEAD) ** -ZIPF_EXPONENT
    group = _co_purchase_groups(rng, leaf)
    community = rng.integers(0, n_communities(n), group.max() + 1)[group]

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
    arrival_ns[rng.random(n) < BACK_CATALOGUE_SHARE] -= CATALOGUE_DAYS * NS_PER_DAY
    future = rng.choice(n, size=int(n * FUTURE_ITEM_SHARE), replace=False)
    arrival_ns[future] = as_of_ns + rng.integers(NS_PER_DAY, 60 * NS_PER_DAY, future.size) // NS_PER_S * NS_PER_S
    stock = rng.negative_binomial(2, 0.05, n).astype(np.int64) + 1
    stock[rng.random(n) < OUT_OF_STOCK_SHARE] = 0

    ids = make_ids("i", n)
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
    return Items(frame, leaf, tier, popularity, group, community, quality, arrival_ns, arrival_ns <= as_of_ns)


def _co_purchase_groups(rng: np.random.Generator, leaf: np.ndarray) -> np.ndarray:
    """Each leaf's items in random order, cut into runs of GROUP_SIZE: group ids 0..n_groups-1."""
    order = np.lexsort((rng.random(leaf.size), leaf))
    sorted_leaf = leaf[order]
    rank_in_leaf = np.arange(leaf.size) - np.searchsorted(sorted_leaf, sorted_leaf, side="left")
    group = np.empty(leaf.size, dtype=np.int64)
    _, group[order] = np.unique(sorted_leaf * leaf.size + rank_in_leaf // GROUP_SIZE, return_inverse=True)
    return group


def _item_texts(rng: np.random.Generator, leaf: np.ndarray, tier: np.ndarray) -> tuple[list[str], list[str]]:
    n = leaf.size
    picks = rng.integers(0, 1 << 30, size=(6, n))  # synonym, brand, adjective, feature, use, model number
    names, abouts = [], []
    for k in range(n):
        lf, tr = taxonomy.LEAVES[leaf[k]], taxonomy.TIERS[tier[k]]
        synonym = lf.synonyms[picks[0, k] % len(lf.synonyms)]
        brand = tr.brands[picks[1, k] % len(tr.brands)]
        adjective = tr.adjectives[picks[2, k] % len(tr.adjectives)]
        names.append(taxonomy.product_name(lf, brand, adjective, synonym, 100 + picks[5, k] % 900))
        abouts.append(
            taxonomy.product_description(
                lf,
                tr,
                brand,
                adjective,
                synonym,
                taxonomy.FEATURES[picks[3, k] % len(taxonomy.FEATURES)],
                taxonomy.USES[picks[4, k] % len(taxonomy.USES)],
            )
        )
    return names, abouts


# ----------------------------------------------------------------------------------------------- users
def make_users(rng: np.random.Generator, n: int, as_of_ns: int, items: Items) -> Users:
    n_leaves = len(taxonomy.LEAVES)
    leaf_size = np.bincount(items.leaf[items.available], minlength=n_leaves)
    choosable = leaf_size > 0  # a preference for a leaf with nothing to buy could never show
    n_prefs = np.minimum(rng.integers(1, MAX_PREFERENCES + 1, n), choosable.sum())
    # bigger categories attract more fans: Gumbel top-k draws distinct leaves with probability ~ size
    keys = np.where(choosable, np.log(np.maximum(leaf_size, 1)), -np.inf) + rng.gumbel(size=(n, n_leaves))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :MAX_PREFERENCES]
    preferences = np.where(np.arange(MAX_PREFERENCES) < n_prefs[:, None], top, -1)
    tier = rng.choice(len(taxonomy.TIERS), size=n, p=TIER_SHARES)
    signup_ns = as_of_ns - rng.integers(7 * NS_PER_DAY, CATALOGUE_DAYS * NS_PER_DAY, n) // NS_PER_S * NS_PER_S
    # the user factor: a few distinct communities (uniformly chosen) with random weights
    communities = _random_communities(rng, n, n_communities(len(items.leaf)))
    community_weights = rng.dirichlet(np.ones(COMMUNITIES_PER_USER), size=n)

    names = np.array([leaf.name for leaf in taxonomy.LEAVES], dtype=object)
    first = rng.integers(0, len(taxonomy.FIRST_NAMES), n)
    last = rng.integers(0, len(taxonomy.LAST_NAMES), n)
    frame = pd.DataFrame(
        {
            schema.USER_ID: make_ids("u", n),
            schema.USER_NAME: [
                f"{taxonomy.FIRST_NAMES[a]} {taxonomy.LAST_NAMES[b]}" for a, b in zip(first, last, strict=True)
            ],
            schema.SIGNUP_DATE: pd.to_datetime(signup_ns, utc=True),
            schema.PREFERENCES: [schema.PREFERENCE_SEPARATOR.join(names[row[row >= 0]]) for row in preferences],
            schema.AGE: np.clip(np.round(rng.normal(37, 12, n)), 18, 85).astype(np.int64),
            schema.GENDER: rng.choice(np.array(["F", "M", "X"], dtype=object), size=n, p=(0.49, 0.48, 0.03)),
        }
    ).astype(schema.USER_DTYPES)
    return Users(frame, preferences, n_prefs, tier, communities, community_weights, signup_ns)
