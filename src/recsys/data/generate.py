"""Synthetic users, items and interactions with planted, measurable and learnable structure.

Four forces shape the interactions, as on real shop data (details in `entities` and `behaviour`):
- declared category taste: each user prefers 1-5 leaf categories (written to the users file) and a price tier;
  a share `preference_strength` of the primary picks follows them, and 0 leaves the preferred share at the
  uniform share;
- latent taste: users lean towards a few hidden communities of items that cut across categories (user and item
  factors of a low-rank model that no column names);
- co-purchases: interactions come in sessions, and most of a session's later items are bought together with an
  earlier one (small groups of items within a leaf); users also come back later for more of a group;
- a long-tailed (Zipf-like) item popularity under all of these.
So item-item methods find real structure (co-purchases, communities), user features explain only the declared
part, and on the default sizes EASE is several times better than popularity, as on real data.

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
from recsys.contract import DEFAULT_PREFERENCE_STRENGTH
from recsys.data.behaviour import make_interactions
from recsys.data.entities import make_items, make_users
from recsys.data.files import write_atomically


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
    items = make_items(items_rng, n_items, as_of_ns)
    stage("users")
    users = make_users(users_rng, n_users, as_of_ns, items)
    stage("interactions")
    events = make_interactions(events_rng, n_interactions, users, items, as_of_ns, preference_strength)
    stage("writing parquet")
    frames = {schema.USERS_FILE: users.frame, schema.ITEMS_FILE: items.frame, schema.INTERACTIONS_FILE: events.frame}
    paths = write_atomically(out, frames)
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
