"""Synthetic interactions: sessions of picks driven by the declared preferences, latent tastes and co-purchases.

A user's interactions come in sessions (minutes long, SESSION_LENGTH interactions on average) spread over the
time between signup and as_of. A session starts with a fresh pick; each later interaction of it is mostly a
co-purchase (another item of the co-purchase group of the session's latest fresh pick), else another fresh pick.
A fresh pick is
- with probability RETURN_SHARE (after the user's first interaction) a return: another item of the group of an
  earlier interaction of the same user (a complement bought later);
- otherwise a primary pick: with probability `strength` the declared category taste (one of the user's
  preferred leaves, mostly the user's price tier, then an item of that bucket by popularity), else the latent
  taste (one of the user's communities by the user's weights, then an item of it by popularity), or, for
  BROWSE_SHARE of those, plain browsing by popularity.
Only items that have arrived by the interaction's time are drawn. Groups stay within a leaf, so co-purchases and
returns keep the category of their primary pick, and with `strength=0` the preferred share falls to the uniform
share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import schema
from recsys.data import taxonomy
from recsys.data.entities import NS_PER_S, Items, Users, make_ids, n_communities

SESSION_LENGTH = 4.0  # mean interactions per session (geometric)
CO_PURCHASE_SHARE = 0.8  # of a session's later interactions: drawn from the group of its latest fresh pick
SESSION_GAP_S = 90.0  # mean seconds between two interactions of a session
RETURN_SHARE = 0.5  # of the fresh picks after a user's first: back to the group of an earlier interaction
BROWSE_SHARE = 0.25  # of the picks not driven by the category: plain popularity, no latent taste
TIER_FOCUS = 0.95  # share of category-driven picks that stay in the user's own price tier
# interaction type mix when following a taste vs browsing; order as schema.INTERACTION_TYPES
# (positive_view, negative_view, cart, purchase, rate): views > carts > purchases > rates either way
TASTE_TYPE_MIX = (0.56, 0.04, 0.20, 0.13, 0.07)
BROWSE_TYPE_MIX = (0.52, 0.32, 0.09, 0.05, 0.02)
RATING_BONUS_PREFERRED, RATING_PENALTY_OTHER = 0.7, -0.6


@dataclass(frozen=True)
class Interactions:
    frame: pd.DataFrame
    preferred_share: float  # interactions whose item lies in one of the user's preferred leaves
    uniform_share: float  # the same share expected if items were chosen uniformly among available ones


class BucketSampler:
    """Draws items by weight within a bucket (e.g. leaf x tier) among the items arrived by a given time, many
    draws at once: items sorted by bucket then arrival, one cumsum, and searchsorted on (bucket, arrival) keys."""

    def __init__(self, bucket_of_item: np.ndarray, weights: np.ndarray, arrival_ns: np.ndarray, n_buckets: int):
        arrival_s = arrival_ns // NS_PER_S
        self.items = np.lexsort((arrival_s, bucket_of_item))
        self.cum = np.cumsum(weights[self.items])
        self.cum0 = np.concatenate([[0.0], self.cum])  # cum0[p]: weight before sorted position p
        sorted_buckets = bucket_of_item[self.items]
        self.start = np.searchsorted(sorted_buckets, np.arange(n_buckets), side="left")
        self.first_s = int(arrival_s.min())
        self.span = int(arrival_s.max()) - self.first_s + 2
        self.keys = sorted_buckets * self.span + (arrival_s[self.items] - self.first_s)
        self.position = np.empty(bucket_of_item.size, dtype=np.int64)
        self.position[self.items] = np.arange(self.items.size)

    def sample(
        self, rng: np.random.Generator, buckets: np.ndarray, at_ns: np.ndarray, other_than: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One item per bucket among those arrived by `at_ns`, never `other_than` (an arrived item of the
        bucket) when given; and whether there was one (else the returned item is meaningless)."""
        since_first = np.clip(at_ns // NS_PER_S - self.first_s, -1, self.span - 1)
        start = self.start[buckets]
        stop = np.searchsorted(self.keys, buckets * self.span + since_first, side="right")
        total = self.cum0[stop] - self.cum0[start]
        position, skipped = start, np.zeros(buckets.size)
        if other_than is not None:
            position = self.position[other_than]
            skipped = np.where(position < stop, self.cum0[position + 1] - self.cum0[position], 0.0)
        target = self.cum0[start] + rng.random(buckets.size) * (total - skipped)
        target += np.where(target >= self.cum0[position], skipped, 0.0)  # jump over `other_than`
        total = total - skipped
        chosen = np.minimum(np.maximum(np.searchsorted(self.cum, target, side="right"), start), np.maximum(stop - 1, 0))
        return self.items[chosen], total > 0


def make_interactions(
    rng: np.random.Generator, n: int, users: Users, items: Items, as_of_ns: int, strength: float
) -> Interactions:
    n_users = len(users.tier)
    # every user gets one interaction while there are enough; activity is long-tailed on top
    activity = rng.lognormal(0.0, 1.0, n_users)
    first = np.arange(min(n, n_users))
    user = np.sort(np.concatenate([first, rng.choice(n_users, size=n - first.size, p=activity / activity.sum())]))

    starts_session = np.ones(n, dtype=bool)
    starts_session[1:] = (user[1:] != user[:-1]) | (rng.random(n - 1) < 1.0 / SESSION_LENGTH)
    arrival_ns = np.where(items.available, items.arrival_ns, as_of_ns + NS_PER_S)  # future items: never drawn
    opened_ns = int(arrival_ns.min())  # no session before the first item arrived
    timestamp = _session_times(rng, user, starts_session, np.maximum(users.signup_ns, opened_ns), as_of_ns)

    item, engaged = _resolve_items(rng, user, starts_session, timestamp, users, items, arrival_ns, strength)

    preferred = (users.preferences[user] == items.leaf[item][:, None]).any(axis=1)
    available = np.flatnonzero(items.available)
    leaf_size = np.bincount(items.leaf[available], minlength=len(taxonomy.LEAVES))
    user_uniform = np.where(users.preferences >= 0, leaf_size[users.preferences], 0).sum(axis=1) / available.size

    type_index = np.where(engaged, _draw(rng, TASTE_TYPE_MIX, n), _draw(rng, BROWSE_TYPE_MIX, n))
    kind = {name: schema.INTERACTION_TYPES.index(name) for name in schema.INTERACTION_TYPES}
    is_rate = type_index == kind[schema.RATE]
    noise = rng.normal(0.0, 0.6, n)
    bonus = np.where(preferred, RATING_BONUS_PREFERRED, RATING_PENALTY_OTHER)
    stars = np.clip(np.round(items.quality[item] + bonus + noise), 1, 5)
    has_quantity = (type_index == kind[schema.PURCHASE]) | (type_index == kind[schema.CART])
    quantity = rng.geometric(0.65, n)

    order = np.lexsort((np.arange(n), user, timestamp))  # by time; a user's session keeps its order
    user, item, type_index, timestamp = user[order], item[order], type_index[order], timestamp[order]
    is_rate, stars, has_quantity, quantity = is_rate[order], stars[order], has_quantity[order], quantity[order]

    titles, contents = _reviews(rng, items.leaf[item[is_rate]], stars[is_rate].astype(np.int64))
    review_title = np.full(n, None, dtype=object)
    review_content = np.full(n, None, dtype=object)
    review_title[is_rate], review_content[is_rate] = titles, contents
    frame = pd.DataFrame(
        {
            schema.INTERACTION_ID: pd.array(make_ids("x", n), dtype="string"),
            schema.USER_ID: pd.array(users.frame[schema.USER_ID].to_numpy(dtype=object)[user], dtype="string"),
            schema.ITEM_ID: pd.array(items.frame[schema.ITEM_ID].to_numpy(dtype=object)[item], dtype="string"),
            schema.TIMESTAMP: pd.to_datetime(timestamp.view("datetime64[ns]"), utc=True),  # plain ints: ~1 s per 1M
            schema.INTERACTION_TYPE: pd.array(
                np.array(schema.INTERACTION_TYPES, dtype=object)[type_index], dtype="string"
            ),
            schema.RATING: pd.arrays.FloatingArray(np.where(is_rate, stars, 0.0), ~is_rate),
            schema.QUANTITY: pd.arrays.IntegerArray(quantity.astype(np.int64), ~has_quantity),
            schema.REVIEW_TITLE: pd.array(review_title, dtype="string"),
            schema.REVIEW_CONTENT: pd.array(review_content, dtype="string"),
        }
    ).astype(schema.INTERACTION_DTYPES, copy=False)
    return Interactions(frame, float(preferred.mean()), float(user_uniform[user].mean()))


def _resolve_items(
    rng: np.random.Generator,
    user: np.ndarray,
    starts_session: np.ndarray,
    at_ns: np.ndarray,
    users: Users,
    items: Items,
    arrival_ns: np.ndarray,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The item of every row (rows by user, then time) and whether it follows a taste (not browsing).

    Each row is a primary pick, a return (to the group of an earlier row of the same user) or a co-purchase (the
    group of the session's latest fresh row). Following these links back (pointer jumping) ends at a primary
    pick, whose group the whole chain shares.
    """
    n = user.size
    rows = np.arange(n)
    fresh = starts_session | (rng.random(n) >= CO_PURCHASE_SHARE)
    user_first = np.maximum.accumulate(np.where(np.r_[True, user[1:] != user[:-1]], rows, 0))
    returns = fresh & (rows > user_first) & (rng.random(n) < RETURN_SHARE)
    earlier = user_first + (rng.random(n) * (rows - user_first)).astype(np.int64)
    latest_fresh = np.maximum.accumulate(np.where(fresh, rows, 0))  # a session starts fresh
    root = np.where(returns, earlier, latest_fresh)
    while not np.array_equal(root[root], root):
        root = root[root]

    primary = root == rows
    picked = np.zeros(n, dtype=np.int64)
    engaged = np.zeros(n, dtype=bool)
    picked[primary], engaged[primary] = _fresh_picks(
        rng, user[primary], at_ns[primary], users, items, arrival_ns, strength
    )
    origin = picked[root]
    by_group = BucketSampler(items.group, items.popularity, arrival_ns, int(items.group.max()) + 1)
    # a return or co-purchase is another item of the group; the same one again if no other has arrived yet
    item = picked  # primaries keep their pick
    back = np.flatnonzero(returns)
    other, found = by_group.sample(rng, items.group[origin[back]], at_ns[back], other_than=origin[back])
    item[back] = np.where(found, other, origin[back])
    later = np.flatnonzero(~fresh)
    anchor = item[latest_fresh[later]]
    other, found = by_group.sample(rng, items.group[anchor], at_ns[later], other_than=anchor)
    item[later] = np.where(found, other, anchor)
    return item, engaged[root]


def _session_times(
    rng: np.random.Generator, user: np.ndarray, starts_session: np.ndarray, earliest_ns: np.ndarray, as_of_ns: int
) -> np.ndarray:
    """Whole seconds: each session at a random time between its user's `earliest_ns` and as_of, its
    interactions a minute or two apart, never after as_of."""
    n = user.size
    session_start = np.flatnonzero(starts_session)
    session = np.cumsum(starts_session) - 1
    gap_ns = ((1.0 + rng.exponential(SESSION_GAP_S, n)) * NS_PER_S).astype(np.int64)
    gap_ns[starts_session] = 0
    elapsed = np.cumsum(gap_ns)
    offset = elapsed - elapsed[session_start][session]
    duration = np.maximum.reduceat(offset, session_start)
    session_user = user[session_start]
    lowest = earliest_ns[session_user]
    when = np.sort(rng.random(session_start.size) + session_user)  # rows are by user: a user's sessions in order
    room = np.maximum(as_of_ns - lowest - duration, 0)
    begin = lowest + ((when - session_user) * room).astype(np.int64)
    return np.minimum(begin[session] + offset, as_of_ns) // NS_PER_S * NS_PER_S


def _fresh_picks(
    rng: np.random.Generator,
    user: np.ndarray,
    at_ns: np.ndarray,
    users: Users,
    items: Items,
    arrival_ns: np.ndarray,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A fresh pick for each (user, time) among the items arrived by then, and whether it follows a taste
    (not browsing). Each sampler runs only on the rows that need it."""
    m, n_tiers, n_leaves = user.size, len(taxonomy.TIERS), len(taxonomy.LEAVES)
    picked = np.zeros(m, dtype=np.int64)
    engaged = np.zeros(m, dtype=bool)
    source = rng.random(m)
    category = np.flatnonzero(source < strength)
    latent = np.flatnonzero((source >= strength) & (rng.random(m) >= BROWSE_SHARE))

    who, when = user[category], at_ns[category]
    leaf = users.preferences[who, (rng.random(who.size) * users.n_preferences[who]).astype(np.int64)]
    tier = np.where(rng.random(who.size) < TIER_FOCUS, users.tier[who], rng.integers(0, n_tiers, who.size))
    by_bucket = BucketSampler(items.leaf * n_tiers + items.tier, items.popularity, arrival_ns, n_leaves * n_tiers)
    picked[category], engaged[category] = by_bucket.sample(rng, leaf * n_tiers + tier, when)
    # small catalogues: the tier's bucket may have nothing yet, then any item of the leaf
    missing = ~engaged[category]
    by_leaf = BucketSampler(items.leaf, items.popularity, arrival_ns, n_leaves)
    picked[category[missing]], engaged[category[missing]] = by_leaf.sample(rng, leaf[missing], when[missing])

    who = user[latent]
    weights = np.cumsum(users.community_weights[who], axis=1)
    slot = np.minimum((rng.random(who.size)[:, None] > weights).sum(axis=1), weights.shape[1] - 1)
    by_community = BucketSampler(items.community, items.popularity, arrival_ns, n_communities(len(items.leaf)))
    picked[latent], engaged[latent] = by_community.sample(rng, users.communities[who, slot], at_ns[latent])

    browsing = np.flatnonzero(~engaged)  # chosen, or a taste with nothing arrived yet
    everything = BucketSampler(np.zeros_like(items.leaf), items.popularity, arrival_ns, 1)
    picked[browsing], _ = everything.sample(rng, np.zeros(browsing.size, dtype=np.int64), at_ns[browsing])
    return picked, engaged


def _draw(rng: np.random.Generator, mix: tuple[float, ...], n: int) -> np.ndarray:
    cum = np.cumsum(mix) / sum(mix)
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(mix) - 1)


def _reviews(rng: np.random.Generator, leaf: np.ndarray, stars: np.ndarray) -> tuple[list[str], list[str]]:
    pick = rng.integers(0, 1 << 30, leaf.size)
    titles = [taxonomy.REVIEW_TITLES[s][p % len(taxonomy.REVIEW_TITLES[s])] for s, p in zip(stars, pick, strict=True)]
    contents = [
        taxonomy.REVIEW_BODIES[s].format(noun=taxonomy.LEAVES[lf].synonyms[0])
        for s, lf in zip(stars, leaf, strict=True)
    ]
    return titles, contents
