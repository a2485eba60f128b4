"""Towers, feature encoding, the text cache and the model dir, at tiny sizes (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import schema, text
from recsys.model import artifacts
from recsys.model.inputs import (
    MAX_HISTORY,
    OOV,
    FeatureSpace,
    age_buckets,
    category_path_tokens,
    fit_feature_space,
    recent_positive_items,
)
from recsys.model.towers import ItemTower, UserTower

pytestmark = pytest.mark.unit

USERS = pd.DataFrame(
    {
        schema.USER_ID: ["u1", "u2", "u3"],
        schema.AGE: [22, 41, 70],
        schema.GENDER: ["F", "M", "X"],
        schema.PREFERENCES: ["Headphones|Laptops", "Blenders", None],
    }
)
ITEMS = pd.DataFrame(
    {
        schema.ITEM_ID: ["i1", "i2", "i3", "i4"],
        schema.PRODUCT_NAME: ["Basix headphones", "Helix laptop", "Everwell blender", None],
        schema.ABOUT_PRODUCT: ["Affordable headphones.", None, "A blender.", None],
        schema.CATEGORY: [
            "Electronics|Audio|Headphones",
            "Electronics|Computers|Laptops",
            "Home & Kitchen|Kitchen Appliances|Blenders",
            "Electronics|Audio|Headphones",
        ],
        schema.ACTUAL_PRICE: [50.0, 1500.0, 70.0, 200.0],
        schema.RATING: [4.1, 4.5, np.nan, 3.9],
    }
)
POSITIVES = pd.DataFrame(
    {
        schema.USER_ID: ["u1", "u1", "u2", "u3"],
        schema.ITEM_ID: ["i1", "i2", "i3", "i1"],
        schema.TIMESTAMP: pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"], utc=True),
    }
)


def fitted_space() -> FeatureSpace:
    return fit_feature_space(USERS, ITEMS, POSITIVES)


def towers(space: FeatureSpace) -> tuple[UserTower, ItemTower]:
    torch.manual_seed(0)
    return UserTower(**space.user_tower_sizes()), ItemTower(**space.item_tower_sizes())


@pytest.fixture()
def text_cache(tmp_path: Path) -> Path:
    return tmp_path / "text"


def test_category_path_tokens_key_each_level_by_its_prefix() -> None:
    assert category_path_tokens("A|B|C") == ["A", "A|B", "A|B|C"]
    assert category_path_tokens("A|B|C|D") == ["A", "A|B", "A|B|C"]
    assert category_path_tokens(None) == []
    assert category_path_tokens(" A | B ") == ["A", "A|B"]


def test_age_buckets_put_missing_ages_in_the_unknown_bucket() -> None:
    buckets = age_buckets(pd.Series([17, 18, 30, 90, None]))
    assert buckets[-1] == OOV
    assert list(buckets[:4]) == sorted(buckets[:4]) and len(set(buckets[:4])) == 4
    assert (buckets[:4] > OOV).all()


def test_feature_space_round_trips_through_json() -> None:
    space = fitted_space()
    again = FeatureSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.to_dict() == space.to_dict()
    assert again.item_index == {"i1": 1, "i2": 2, "i3": 3}
    assert space.price_column == schema.ACTUAL_PRICE
    assert space.use_text


def test_unknown_ids_and_tokens_map_to_oov() -> None:
    space = fitted_space()
    users = pd.DataFrame({schema.USER_ID: ["u1", "nobody", None], schema.PREFERENCES: ["Headphones|Nope", None, ""]})
    encoded = space.encode_users(users, [["i1", "i-unknown"], [], []])
    assert encoded["user"].tolist() == [space.user_index["u1"], OOV, OOV]
    assert encoded["preferences"][0].tolist().count(OOV) == encoded["preferences"].shape[1] - 1
    assert encoded["history"].shape == (3, MAX_HISTORY)
    assert encoded["history"][0].tolist().count(space.item_index["i1"]) == 1
    assert encoded["history"][0].count_nonzero() == 1  # the unknown item is dropped, not OOV-padded
    assert encoded["gender"].tolist() == [OOV] * 3  # no gender column: every row unknown


def test_items_missing_every_optional_column_still_encode(text_cache: Path) -> None:
    space = fitted_space()
    encoded = space.encode_items(pd.DataFrame({schema.ITEM_ID: ["i2", "new"]}), text_cache)
    assert encoded["item"].tolist() == [space.item_index["i2"], OOV]
    assert encoded["category"].count_nonzero() == 0
    assert torch.all(encoded["text"] == 0)
    assert encoded["numerics"].shape == (2, space.item_tower_sizes()["n_numerics"])
    assert torch.isfinite(encoded["numerics"]).all()


def test_relative_price_separates_cheap_from_expensive_items_of_one_category(text_cache: Path) -> None:
    space = fitted_space()
    relative = space.relative_prices(ITEMS)
    assert relative[0] < relative[3]  # two headphones: 50 vs 200


def test_towers_output_unit_vectors_of_the_schema_size(text_cache: Path) -> None:
    space = fitted_space()
    user_tower, item_tower = towers(space)
    users = user_tower(**space.encode_users(USERS, [["i1"], [], ["i2", "i3"]]))
    items = item_tower(**space.encode_items(ITEMS, text_cache))
    for vectors, n in ((users, len(USERS)), (items, len(ITEMS))):
        assert vectors.shape == (n, schema.EMBEDDING_DIM)
        assert torch.allclose(vectors.norm(dim=1), torch.ones(n), atol=1e-5)


def test_towers_work_without_text_or_numerics() -> None:
    tower = ItemTower(n_items=3, n_category_tokens=2, n_numerics=0, text_dim=0)
    out = tower(
        item=torch.tensor([0, 3]),
        category=torch.zeros(2, 3, dtype=torch.int64),
        numerics=torch.zeros(2, 0),
        text=torch.zeros(2, 0),
    )
    assert out.shape == (2, schema.EMBEDDING_DIM)


def test_recent_positive_items_skip_negative_views_and_keep_time_order() -> None:
    frame = pd.DataFrame(
        {
            schema.USER_ID: ["u1", "u1", "u1", "u2"],
            schema.ITEM_ID: ["late", "early", "disliked", "x"],
            schema.TIMESTAMP: pd.to_datetime(["2026-02-01", "2026-01-01", "2026-01-15", "2026-01-01"], utc=True),
            schema.INTERACTION_TYPE: [schema.PURCHASE, schema.POSITIVE_VIEW, schema.NEGATIVE_VIEW, schema.CART],
        }
    )
    assert recent_positive_items(frame) == {"u1": ["early", "late"], "u2": ["x"]}


def test_item_texts_join_name_and_description_and_tolerate_gaps() -> None:
    assert text.item_texts(ITEMS) == [
        "Basix headphones. Affordable headphones.",
        "Helix laptop",
        "Everwell blender. A blender.",
        "",
    ]
    assert text.item_texts(pd.DataFrame({schema.ITEM_ID: ["a"]})) == [""]


def test_encode_texts_normalises_and_caches_by_text_hash(text_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = text.encode_texts(["a red bluetooth speaker", "a chef knife set", "a red bluetooth speaker"], text_cache)
    assert first.shape == (3, schema.TEXT_EMBEDDING_DIM) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first[0], first[2])
    assert len(list(text_cache.rglob("*.npy"))) == 2

    def no_encoder() -> None:
        raise AssertionError("cached texts must not be re-encoded")

    monkeypatch.setattr(text, "get_encoder", no_encoder)
    again = text.encode_texts(["a chef knife set", "a red bluetooth speaker"], text_cache)
    assert np.array_equal(again, first[[1, 0]])


def save_tiny_model(out: Path, space: FeatureSpace) -> str:
    user_tower, item_tower = towers(space)
    return artifacts.save_model(
        out,
        config={"user_tower": {}, "item_tower": {}},
        features=space,
        user_tower=user_tower,
        item_tower=item_tower,
        recent_items={"u1": ["i1", "i2"]},
        metrics={"split": "temporal"},
    )


def test_model_dir_round_trips_and_versions_by_content(tmp_path: Path, text_cache: Path) -> None:
    space = fitted_space()
    version = save_tiny_model(tmp_path / "model", space)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        [*artifacts.MODEL_FILES, artifacts.METRICS_FILE]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging dir left behind
    model = artifacts.load_model(tmp_path / "model")
    assert model.model_version == version
    assert model.item_ids == ["i1", "i2", "i3"] and model.user_ids == ["u1", "u2", "u3"]
    assert save_tiny_model(tmp_path / "again", space) == version  # same content, same version

    items = model.encode_items(ITEMS, text_cache)
    assert items.shape == (4, schema.EMBEDDING_DIM) and items.dtype == np.float32
    assert np.allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    profile_only = pd.DataFrame({schema.USER_ID: [None, "stranger"], schema.PREFERENCES: ["Blenders", None]})
    users = model.encode_users(profile_only)
    assert users.shape == (2, schema.EMBEDDING_DIM) and np.isfinite(users).all()
    # history defaults to what training saw; an explicit mapping replaces it
    known = pd.DataFrame({schema.USER_ID: ["u1"]})
    assert not np.allclose(model.encode_users(known), model.encode_users(known, history={}))
    assert np.allclose(model.encode_users(known), model.encode_users(known, history={"u1": ["i1", "i2"]}))


def test_tampered_or_incomplete_model_dirs_are_refused(tmp_path: Path) -> None:
    save_tiny_model(tmp_path / "model", fitted_space())
    with pytest.raises(artifacts.ModelDirError, match="missing"):
        artifacts.load_model(tmp_path / "nothing-here")
    (tmp_path / "model" / artifacts.MODEL_VERSION_FILE).write_text("0123456789abcdef\n")
    with pytest.raises(artifacts.ModelDirError, match="does not match"):
        artifacts.load_model(tmp_path / "model")
