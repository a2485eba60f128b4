"""The synthetic data generator: files, dtypes, sizes, determinism, the planted signal, the collaborative
structure (long-tailed popularity, co-purchase sessions, item-item signal), and bad arguments."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys import schema
from recsys.cli import app
from recsys.contract import DEFAULT_PREFERENCE_STRENGTH
from recsys.data import entities, taxonomy
from recsys.data.generate import GenerationError, generate
from recsys.model.dataset import SPLIT_KINDS
from recsys.model.evaluate import evaluate_model_and_baselines

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
SMALL = {"n_users": 150, "n_items": 300, "n_interactions": 4000}
DTYPES = {
    schema.USERS_FILE: schema.USER_DTYPES,
    schema.ITEMS_FILE: schema.ITEM_DTYPES,
    schema.INTERACTIONS_FILE: schema.INTERACTION_DTYPES,
}


def read(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / name) for name in schema.DATA_FILES}


@pytest.fixture(scope="module")
def frames(tiny_data: Path) -> dict[str, pd.DataFrame]:
    return read(tiny_data)


def test_catalogue_is_amazon_like() -> None:
    assert len(taxonomy.DEPARTMENTS) >= 8
    assert len(taxonomy.LEAVES) >= 40
    assert len({leaf.name for leaf in taxonomy.LEAVES}) == len(taxonomy.LEAVES)  # preferences name leaves
    assert "Electronics|Audio|Headphones" in {leaf.path for leaf in taxonomy.LEAVES}


@pytest.mark.parametrize("name", schema.DATA_FILES)
def test_files_have_schema_columns_and_dtypes(frames: dict[str, pd.DataFrame], name: str) -> None:
    assert {c: str(t) for c, t in frames[name].dtypes.items()} == {
        c: str(pd.api.types.pandas_dtype(t)) for c, t in DTYPES[name].items()
    }


def test_exact_sizes_and_ids(frames: dict[str, pd.DataFrame]) -> None:
    users, items, events = frames[schema.USERS_FILE], frames[schema.ITEMS_FILE], frames[schema.INTERACTIONS_FILE]
    assert (len(users), len(items), len(events)) == (200, 400, 6000)
    assert users[schema.USER_ID].iloc[0] == "u00001" and items[schema.ITEM_ID].iloc[-1] == "i00400"
    assert events[schema.INTERACTION_ID].is_unique
    assert set(events[schema.USER_ID]) <= set(users[schema.USER_ID])
    assert set(events[schema.ITEM_ID]) <= set(items[schema.ITEM_ID])


def test_items_look_like_products(frames: dict[str, pd.DataFrame]) -> None:
    items = frames[schema.ITEMS_FILE]
    leaf_of = items[schema.CATEGORY].str.split(schema.CATEGORY_SEPARATOR).str[-1]
    by_leaf = {leaf.name: leaf for leaf in taxonomy.LEAVES}
    # the text names the category: a synonym of the leaf is in the name and the leaf in the description
    for name, about, leaf in zip(items[schema.PRODUCT_NAME], items[schema.ABOUT_PRODUCT], leaf_of, strict=True):
        assert any(s.lower() in name.lower() for s in by_leaf[leaf].synonyms)
        assert leaf.lower() in about.lower()
    assert (items[schema.DISCOUNTED_PRICE] <= items[schema.ACTUAL_PRICE]).all()
    assert items[schema.RATING].between(1, 5).all()
    assert (items[schema.STOCK_QUANTITY] == 0).any() and (items[schema.STOCK_QUANTITY] > 0).mean() > 0.8
    assert (items[schema.ARRIVAL_DATE] > pd.Timestamp.now(tz="UTC")).any()
    counts = items[schema.RATING_COUNT]
    assert counts.max() > 10 * counts.median()  # long tail


def test_users_have_one_to_five_leaf_preferences(frames: dict[str, pd.DataFrame]) -> None:
    prefs = frames[schema.USERS_FILE][schema.PREFERENCES].str.split(schema.PREFERENCE_SEPARATOR)
    leaves = {leaf.name for leaf in taxonomy.LEAVES}
    assert prefs.map(len).between(1, 5).all()
    assert all(set(p) <= leaves and len(set(p)) == len(p) for p in prefs)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(**SMALL, seed=seed, out=tmp_path / folder, as_of=AS_OF)
    for name in schema.DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a, c = read(tmp_path / "a"), read(tmp_path / "c")
    assert not a[schema.INTERACTIONS_FILE].equals(c[schema.INTERACTIONS_FILE])
    assert not a[schema.USERS_FILE][schema.PREFERENCES].equals(c[schema.USERS_FILE][schema.PREFERENCES])


def test_planted_share_versus_uniform(tmp_path: Path) -> None:
    strong = generate(**SMALL, seed=11, out=tmp_path / "strong", as_of=AS_OF, preference_strength=0.85)
    planted = generate(**SMALL, seed=11, out=tmp_path / "planted", as_of=AS_OF)
    off = generate(**SMALL, seed=11, out=tmp_path / "off", as_of=AS_OF, preference_strength=0.0)
    assert strong.preferred_share >= 0.75
    # the default leaves room for the latent tastes and browsing, and the category still stands out
    assert planted.preferred_share > 4 * planted.uniform_share
    assert strong.preferred_share > planted.preferred_share > off.preferred_share
    assert off.preferred_share == pytest.approx(off.uniform_share, abs=0.03)
    # the report's share is what the files say
    events, users = read(tmp_path / "planted")[schema.INTERACTIONS_FILE], read(tmp_path / "planted")[schema.USERS_FILE]
    assert preferred_mask(events, users, read(tmp_path / "planted")[schema.ITEMS_FILE]).mean() == pytest.approx(
        planted.preferred_share
    )


def preferred_mask(events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    prefs = users.set_index(schema.USER_ID)[schema.PREFERENCES].str.split(schema.PREFERENCE_SEPARATOR)
    leaf = items.set_index(schema.ITEM_ID)[schema.CATEGORY].str.split(schema.CATEGORY_SEPARATOR).str[-1]
    return np.array([leaf[i] in prefs[u] for u, i in zip(events[schema.USER_ID], events[schema.ITEM_ID], strict=True)])


def test_timestamps_after_signup_and_arrival_never_future(frames: dict[str, pd.DataFrame]) -> None:
    events = frames[schema.INTERACTIONS_FILE]
    signup = events[schema.USER_ID].map(frames[schema.USERS_FILE].set_index(schema.USER_ID)[schema.SIGNUP_DATE])
    arrival = events[schema.ITEM_ID].map(frames[schema.ITEMS_FILE].set_index(schema.ITEM_ID)[schema.ARRIVAL_DATE])
    assert (events[schema.TIMESTAMP] >= signup).all()
    assert (events[schema.TIMESTAMP] >= arrival).all()
    assert (events[schema.TIMESTAMP] <= pd.Timestamp.now(tz="UTC")).all()


def test_type_mix_quantities_reviews(frames: dict[str, pd.DataFrame]) -> None:
    events = frames[schema.INTERACTIONS_FILE]
    counts = events[schema.INTERACTION_TYPE].value_counts()
    assert set(counts.index) == set(schema.INTERACTION_TYPES)
    assert counts[schema.POSITIVE_VIEW] > counts[schema.CART] > counts[schema.PURCHASE] > counts[schema.RATE]
    is_rate = events[schema.INTERACTION_TYPE] == schema.RATE
    assert events.loc[is_rate, schema.RATING].between(1, 5).all() and events.loc[~is_rate, schema.RATING].isna().all()
    assert (
        events.loc[is_rate, schema.REVIEW_TITLE].notna().all()
        and events.loc[~is_rate, schema.REVIEW_TITLE].isna().all()
    )
    purchases = events[events[schema.INTERACTION_TYPE] == schema.PURCHASE]
    assert (purchases[schema.QUANTITY] >= 1).all()


def test_ratings_higher_on_preferred_items(frames: dict[str, pd.DataFrame]) -> None:
    events = frames[schema.INTERACTIONS_FILE]
    rates = events[events[schema.INTERACTION_TYPE] == schema.RATE]
    preferred = preferred_mask(rates, frames[schema.USERS_FILE], frames[schema.ITEMS_FILE])
    assert rates[schema.RATING][preferred].mean() > rates[schema.RATING][~preferred].mean() + 0.5


# ----------------------------------------------------------------------------------- collaborative structure
@pytest.fixture(scope="module")
def default_sized(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The interactions of the default sizes (1000 users, 5000 items, 20000 interactions)."""
    out = tmp_path_factory.mktemp("default")
    generate(n_users=1000, n_items=5000, n_interactions=20000, seed=42, out=out, as_of=AS_OF)
    return pd.read_parquet(out / schema.INTERACTIONS_FILE)


def test_co_purchase_groups_stay_in_one_leaf_and_one_community() -> None:
    items = entities.make_items(np.random.default_rng(0), 2000, int(pd.Timestamp(AS_OF).value))
    per_group = pd.DataFrame({"group": items.group, "leaf": items.leaf, "community": items.community}).groupby("group")
    assert (per_group["leaf"].nunique() == 1).all() and (per_group["community"].nunique() == 1).all()
    assert per_group.size().max() == entities.GROUP_SIZE and per_group.size().mean() > entities.GROUP_SIZE / 2
    assert items.community.max() + 1 == entities.n_communities(2000)


def test_popularity_has_a_long_tail(default_sized: pd.DataFrame) -> None:
    counts = default_sized[schema.ITEM_ID].value_counts().reindex(_item_ids(5000), fill_value=0)
    counts = counts.sort_values(ascending=False).to_numpy()
    assert counts[:500].sum() > 0.4 * counts.sum()  # the top 10% of items
    assert counts[0] > 20 * max(np.median(counts), 1)


def test_sessions_hold_co_purchases(default_sized: pd.DataFrame) -> None:
    """A user's consecutive interactions are mostly minutes apart, and the same consecutive item pairs recur
    across users far more often than the same interactions paired at random (popularity kept)."""
    events = default_sized.sort_values([schema.USER_ID, schema.TIMESTAMP, schema.INTERACTION_ID])
    same_user = events[schema.USER_ID].to_numpy()[1:] == events[schema.USER_ID].to_numpy()[:-1]
    gaps = np.diff(events[schema.TIMESTAMP].to_numpy())[same_user]
    assert (gaps < np.timedelta64(1, "h")).mean() > 0.6
    shuffled = events.assign(**{schema.ITEM_ID: np.random.default_rng(0).permutation(events[schema.ITEM_ID])})
    assert recurring_pair_share(events) > 10 * recurring_pair_share(shuffled)


def recurring_pair_share(events: pd.DataFrame) -> float:
    """Share of in-session consecutive pairs of distinct items (as sets) that more than one user has."""
    user, item = events[schema.USER_ID].to_numpy(), events[schema.ITEM_ID].to_numpy()
    time = events[schema.TIMESTAMP].to_numpy()
    keep = (user[1:] == user[:-1]) & (item[1:] != item[:-1]) & (np.diff(time) < np.timedelta64(1, "h"))
    pairs = pd.DataFrame(
        {"a": np.minimum(item[1:], item[:-1])[keep], "b": np.maximum(item[1:], item[:-1])[keep], "u": user[1:][keep]}
    ).drop_duplicates()
    users_per_pair = pairs.groupby(["a", "b"]).size()
    return float((users_per_pair > 1).mean())


@pytest.mark.parametrize(("strength", "factor"), [(DEFAULT_PREFERENCE_STRENGTH, 3.0), (0.0, 2.0)])
def test_item_item_structure_lets_ease_beat_popularity(tmp_path: Path, strength: float, factor: float) -> None:
    """As on real data, EASE is far ahead of popularity on both splits, and still clearly ahead without the
    planted categories (popularity is stronger there: communities are fewer than category x tier buckets, so users
    share more best sellers)."""
    sizes = {"n_users": 500, "n_items": 800, "n_interactions": 8000}
    generate(**sizes, seed=1, out=tmp_path, as_of=AS_OF, preference_strength=strength)
    for split in SPLIT_KINDS:
        baselines = evaluate_model_and_baselines(tmp_path, None, split)["baselines"]
        ease, popularity = baselines["ease"]["ndcg@10"], baselines["popularity"]["ndcg@10"]
        assert ease > factor * popularity, (split, baselines)


def _item_ids(n: int) -> list[str]:
    return [f"i{k:05d}" for k in range(1, n + 1)]


@pytest.mark.parametrize(
    "kwargs", [{"n_users": 0}, {"n_items": -3}, {"n_interactions": 0}, {"preference_strength": 1.5}, {"seed": -1}]
)
def test_bad_arguments_raise_before_writing(tmp_path: Path, kwargs: dict) -> None:
    args = {**SMALL, "seed": 1, **kwargs}
    with pytest.raises(GenerationError):
        generate(**args, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def run_cli(*args: str):
    return CliRunner().invoke(app, ["generate", "--n-users", "20", "--n-items", "50", "--n-interactions", "200", *args])


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--n-users", "0", "n_users must be a positive integer"),
        ("--n-items", "-5", "n_items must be a positive integer"),
        ("--n-interactions", "0", "n_interactions must be"),
        ("--preference-strength", "2", "preference_strength"),
    ],
)
def test_cli_bad_sizes_exit_2_and_write_nothing(tmp_path: Path, flag: str, value: str, message: str) -> None:
    result = run_cli("--out", str(tmp_path / "out"), flag, value)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_cli_out_that_is_a_file_or_unwritable(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    for out, message in ((a_file, "is not a folder"), (a_file / "sub", "cannot create output folder")):
        result = run_cli("--out", str(out))
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_cli_writes_files_and_prints_the_signal(tmp_path: Path) -> None:
    result = run_cli("--out", str(tmp_path), "--seed", "5")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(schema.DATA_FILES)  # no temporaries left
    assert "preferred" in result.output and "uniform" in result.output
