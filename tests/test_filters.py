"""Filters, each rule alone and chained, on a hand-made catalogue; request validation (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.filters import (
    AvailabilityConfig,
    CompiledFilters,
    ContextRule,
    ContextualConfig,
    DemographicConfig,
    FilterConfig,
    HistoryConfig,
    UserFacts,
    parse_preferences,
)
from recsys.history import UserHistory
from recsys.item_catalogue import ItemCatalogue
from recsys.request_models import MAX_INSTANCES, MAX_K, RecommendRequest, RequestError, parse_instances

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday, 10:00
SATURDAY_NIGHT = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
ADULT = UserFacts(age=30)
PAST, FUTURE = "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"

# item_id, category, arrival, stock
ROWS = [
    ("i0", "Electronics|Audio|Headphones", PAST, 5),
    ("i1", "Electronics|Audio|Earbuds", FUTURE, 5),  # not arrived yet
    ("i2", "Electronics|Mobile|Smartphones", PAST, 0),  # out of stock
    ("i3", "Home & Kitchen|Cookware|Knife Sets", PAST, 3),  # adults only
    ("i4", "Clothing|Men|Men's Jackets", PAST, 3),  # targeted at M
    ("i5", "Clothing|Women|Women's Dresses", PAST, 3),  # targeted at F
    ("i6", "Office Products|Writing|Notebooks", PAST, 3),
    ("i7", "Toys & Games|Games|Board Games", PAST, 3),
    ("i8", "Beauty & Personal Care|Skin Care|Sunscreens", PAST, 3),
    ("i9", "Books|Fiction|Mystery Novels", PAST, None),  # stock unknown
]


@pytest.fixture(scope="module")
def catalogue() -> ItemCatalogue:
    frame = pd.DataFrame(ROWS, columns=[schema.ITEM_ID, schema.CATEGORY, schema.ARRIVAL_DATE, schema.STOCK_QUANTITY])
    frame[schema.PRODUCT_NAME] = [f"product {i}" for i in range(len(frame))]
    frame[schema.IMG_LINK] = None
    return ItemCatalogue.from_frame(frame)


def only(**rules) -> FilterConfig:
    """A config with every rule disabled except the ones given."""
    off = {
        "availability": AvailabilityConfig(enabled=False),
        "demographic": DemographicConfig(enabled=False),
        "history": HistoryConfig(enabled=False),
        "contextual": ContextualConfig(enabled=False),
    }
    return FilterConfig(**{**off, **rules})


def run(catalogue, config, user=ADULT, moment=NOW, **context):
    rows = np.arange(len(catalogue), dtype=np.int64)
    scores = np.linspace(1.0, 0.1, len(catalogue)).astype(np.float32)  # i0 best ... i9 worst
    result = CompiledFilters(config, catalogue).apply(rows, scores, user, moment, **context)
    return [catalogue.item_ids[r] for r in result.rows], result


def test_availability_removes_future_out_of_stock_and_unknown_stock(catalogue):
    ids, result = run(catalogue, only(availability=AvailabilityConfig()))
    assert set(ids) == {"i0", "i3", "i4", "i5", "i6", "i7", "i8"}
    assert result.removed == {"availability": 3, "demographic": 0, "history": 0, "contextual": 0}


def test_availability_depends_on_request_time(catalogue):
    ids, _ = run(catalogue, only(availability=AvailabilityConfig()), moment=datetime(2027, 6, 1, tzinfo=UTC))
    assert "i1" in ids  # arrived by then


def test_demographic_age(catalogue):
    config = only(demographic=DemographicConfig())
    assert "i3" not in run(catalogue, config, UserFacts(age=15))[0]
    assert "i3" in run(catalogue, config, UserFacts(age=18))[0]
    assert "i3" not in run(catalogue, config, UserFacts(age=None))[0]  # unknown age: treated as a minor


def test_demographic_gender_unless_preferred(catalogue):
    config = only(demographic=DemographicConfig())
    ids = run(catalogue, config, UserFacts(age=30, gender="F"))[0]
    assert "i4" not in ids and "i5" in ids
    ids = run(catalogue, config, UserFacts(age=30, gender="M"))[0]
    assert "i5" not in ids and "i4" in ids
    prefers = UserFacts(age=30, gender="F", preferences=parse_preferences("Men's Jackets|Laptops"))
    assert "i4" in run(catalogue, config, prefers)[0]
    assert {"i4", "i5"} <= set(run(catalogue, config, UserFacts(age=30, gender=None))[0])


def test_history_excludes_configured_kinds(catalogue):
    past = UserHistory(purchased=("i0",), carted=("i6",), viewed=("i7",))

    def excluded(kinds):
        facts = UserFacts(age=30, excluded_items=catalogue.positions(past.items(kinds)))
        return set(catalogue.item_ids) - set(run(catalogue, only(history=HistoryConfig(exclude=kinds)), facts)[0])

    assert excluded(("purchased",)) == {"i0"}
    assert excluded(("purchased", "carted", "viewed")) == {"i0", "i6", "i7"}


def test_contextual_defaults_boost_and_exclude(catalogue):
    config = only(contextual=ContextualConfig())
    base = dict(zip(catalogue.item_ids, np.linspace(1.0, 0.1, len(catalogue)), strict=True))

    def boosts(**kwargs):
        ids, result = run(catalogue, config, **kwargs)
        return {i: round(float(s) - base[i], 4) for i, s in zip(ids, result.scores, strict=True)}, result

    weekday, _ = boosts()  # Friday 10:00: office hours
    assert weekday["i6"] == 0.05 and weekday["i7"] == 0.0 and weekday["i9"] == 0.0
    weekend_night, _ = boosts(moment=SATURDAY_NIGHT)
    assert weekend_night["i7"] == 0.05 and weekend_night["i9"] == 0.05 and weekend_night["i6"] == 0.0
    mobile, _ = boosts(device="Mobile")
    assert mobile["i0"] == 0.05 and mobile["i2"] == 0.05
    winter, result = boosts(season="winter")
    assert "i8" not in winter and result.removed["contextual"] == 1 and winter["i4"] == 0.05


def test_context_rule_hours_wrap_midnight():
    rule = ContextRule(name="night", categories=("Books",), hours=(22, 6))
    assert rule.active(datetime(2026, 1, 1, 23, tzinfo=UTC), None, None)
    assert rule.active(datetime(2026, 1, 1, 3, tzinfo=UTC), None, None)
    assert not rule.active(datetime(2026, 1, 1, 12, tzinfo=UTC), None, None)


def test_chain_counts_each_rule_on_what_is_left(catalogue):
    past = UserHistory(purchased=("i0", "i2"))  # i2 is already gone by availability
    facts = UserFacts(age=15, gender="F", excluded_items=catalogue.positions(past.items(("purchased",))))
    ids, result = run(catalogue, FilterConfig(), facts, season="winter")
    assert set(ids) == {"i5", "i6", "i7"}
    assert result.removed == {"availability": 3, "demographic": 2, "history": 1, "contextual": 1}
    assert list(result.scores) == sorted(result.scores, reverse=True)


# ------------------------------------------------------------------------------------------ request validation
def test_parse_valid_instances():
    parsed = parse_instances(
        {
            "instances": [
                {"user_id": "u1", "k": 3, "context": {"timestamp": "2026-11-27T09:00:00+01:00"}},
                {"user": {"preferences": "Books", "age": 31, "gender": "F"}},
            ]
        }
    )
    assert isinstance(parsed[0], RecommendRequest) and parsed[0].k == 3
    assert parsed[0].context.moment().hour == 9  # local hour of the given offset
    assert parsed[1].k == 10 and parsed[1].user.age == 31


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ({}, "instances"),
        ({"instances": {}}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": [{}] * (MAX_INSTANCES + 1)}, "instances"),
        ({"instances": ["u1"]}, "instances[0]"),
        ({"instances": [{"k": 3}]}, "instances[0]"),
        ({"instances": [{"user_id": 7}]}, "instances[0].user_id"),
        ({"instances": [{"user_id": ""}]}, "instances[0].user_id"),
        ({"instances": [{"user_id": "x" * 500}]}, "instances[0].user_id"),
        ({"instances": [{"user_id": "u", "k": 0}]}, "instances[0].k"),
        ({"instances": [{"user_id": "u", "k": MAX_K + 1}]}, "instances[0].k"),
        ({"instances": [{"user_id": "u", "k": "5"}]}, "instances[0].k"),
        ({"instances": [{"user_id": "u", "k": True}]}, "instances[0].k"),
        ({"instances": [{"user_id": "u", "k": 2.5}]}, "instances[0].k"),
        ({"instances": [{"user_id": "u", "colour": "red"}]}, "instances[0].colour"),
        ({"instances": [{"user": {"age": "old"}}]}, "instances[0].user.age"),
        ({"instances": [{"user": {"age": -1}}]}, "instances[0].user.age"),
        ({"instances": [{"user": "Books"}]}, "instances[0].user"),
        ({"instances": [{"user": {"preferences": "x" * 5000}}]}, "instances[0].user.preferences"),
        ({"instances": [{"user_id": "u", "context": {"timestamp": "soon"}}]}, "instances[0].context.timestamp"),
        ({"instances": [{"user_id": "u", "context": {"device": "x" * 100}}]}, "instances[0].context.device"),
        ({"instances": [{"user_id": "u"}, {"user_id": None}]}, "instances[1]"),
    ],
)
def test_bad_instances_name_the_field(payload, field):
    with pytest.raises(RequestError) as err:
        parse_instances(payload)
    assert str(err.value).startswith(field + ":") or str(err.value).startswith(field + " "), str(err.value)


def test_filter_config_from_a_json_file(tmp_path) -> None:
    from pydantic import ValidationError

    from recsys.filters import load_filter_config

    assert load_filter_config(None) == FilterConfig()
    path = tmp_path / "filters.json"
    path.write_text('{"history": {"exclude": ["purchased", "carted"]}, "contextual": {"enabled": false}}')
    config = load_filter_config(path)
    assert config.history.exclude == ("purchased", "carted") and not config.contextual.enabled
    assert config.demographic == DemographicConfig()  # untouched rules keep their defaults
    path.write_text('{"histroy": {}}')
    with pytest.raises(ValidationError):
        load_filter_config(path)
