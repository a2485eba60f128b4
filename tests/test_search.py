"""Semantic search, similar items and personalised search (issue 8) on the tiny generated catalogue.

In-process over a published tiny model (same helpers and seed as the recommender and serving tests, so the
publish is the same model_version), then the three request kinds through a real predictor process and the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_setup import copy_feature_repo, predictor, setup_published
from typer.testing import CliRunner

from recsys import schema
from recsys.recommender import Recommender
from recsys.request_models import (
    MAX_QUERY_CHARS,
    RequestContext,
    RequestError,
    SearchRequest,
    SimilarRequest,
    parse_instances,
)
from recsys.search import MODE_PERSONALISED, MODE_SEARCH, MODE_SIMILAR, Searcher, encode_queries
from recsys.serving_state import ServingSettings, ServingState

PREDICT = "/v1/models/recommender:predict"
LATE = datetime(2030, 1, 1, tzinfo=UTC)  # every generated item has arrived by then
CONTEXT = RequestContext(timestamp=LATE)
BROAD_QUERIES = ("gift", "premium quality", "affordable everyday item")  # match items of many categories


@dataclass(frozen=True)
class Published:
    repo: Path
    model_dir: Path
    version: str
    users: pd.DataFrame
    items: pd.DataFrame  # indexed by item_id


def leaf(category: str) -> str:
    return category.split(schema.CATEGORY_SEPARATOR)[-1]


def categories(answer: dict) -> list[str]:
    return [item[schema.CATEGORY] for item in answer["items"]]


def ids(answer: dict) -> list[str]:
    return [item[schema.ITEM_ID] for item in answer["items"]]


# ------------------------------------------------------------------------------------------ unit
@pytest.mark.unit
@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ({"query": ""}, "instances[0].query: must not be empty"),
        ({"query": " \t\n "}, "instances[0].query: must not be empty"),
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, f"instances[0].query: String should have at most {MAX_QUERY_CHARS}"),
        ({"query": 7}, "instances[0].query: Input should be a valid string"),
        ({"query": "tents", "k": 0}, "instances[0].k"),
        ({"query": "tents", "item_id": "i1"}, "instances[0].item_id: Extra inputs"),
        ({"item_id": ""}, "instances[0].item_id"),
        ({"item_id": "i1", "user_id": "u1"}, "instances[0].user_id: Extra inputs"),
    ],
)
def test_bad_search_instances_name_the_field(instance: dict, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_instances({"instances": [instance]})
    assert str(caught.value).startswith(message), caught.value


@pytest.mark.unit
def test_instance_kinds() -> None:
    search, personal, similar = parse_instances(
        {"instances": [{"query": "tents"}, {"query": "tents", "user_id": "u1", "k": 3}, {"item_id": "i1"}]}
    )
    assert isinstance(search, SearchRequest) and search.user_id is None and search.k == 10
    assert isinstance(personal, SearchRequest) and personal.user_id == "u1" and personal.k == 3
    assert isinstance(similar, SimilarRequest) and similar.item_id == "i1"
    assert len(parse_instances({"instances": [{"query": "x" * MAX_QUERY_CHARS}]})) == 1


@pytest.mark.unit
def test_query_encoder_matches_the_item_text_encoder() -> None:
    import torch

    from recsys.text import encode_texts, get_encoder

    threads = torch.get_num_threads()
    vectors = encode_queries(["camping tent", "wireless headphones"])
    assert torch.get_num_threads() == threads  # the encoder's own thread count does not leak
    assert vectors.shape == (2, schema.TEXT_EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert get_encoder() is get_encoder()  # loaded once per process
    cached = encode_texts(["camping tent"])  # the path item texts take
    assert float(vectors[0] @ cached[0]) > 0.999
    assert encode_queries([]).shape == (0, schema.TEXT_EMBEDDING_DIM)


# ------------------------------------------------------------------------------------------ in-process
@pytest.fixture(scope="module")
def published(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("search")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    version = setup_published(tiny_data, repo, root / "model", seed=1)
    return Published(
        repo=repo,
        model_dir=root / "model",
        version=version,
        users=pd.read_parquet(tiny_data / schema.USERS_FILE),
        items=pd.read_parquet(tiny_data / schema.ITEMS_FILE).set_index(schema.ITEM_ID),
    )


@pytest.fixture(scope="module", params=["exact", "hnsw"])
def searcher(request: pytest.FixtureRequest, published: Published) -> Iterator[Searcher]:
    serving = ServingSettings(retrieval=request.param)
    state = ServingState.from_settings(published.model_dir, poll=False, serving=serving)
    assert state.ready(), "the serving state did not load the published version"
    yield Searcher(state, Recommender(state))
    state.close()


def well_stocked_leaves(items: pd.DataFrame, at_least: int = 12) -> list[str]:
    """Categories with enough items in stock that 8 of 10 results can come from them."""
    counts = items.loc[items[schema.STOCK_QUANTITY] > 0, schema.CATEGORY].value_counts()
    return sorted(counts[counts >= at_least].index)


@pytest.mark.integration
def test_query_naming_a_leaf_returns_that_leaf(searcher: Searcher, published: Published) -> None:
    leaves = well_stocked_leaves(published.items)
    assert len(leaves) >= 4
    requests = [SearchRequest(query=leaf(c).lower(), k=10, context=CONTEXT) for c in leaves]
    answers = searcher.answer(requests)
    for category, answer in zip(leaves, answers, strict=True):
        assert answer["mode"] == MODE_SEARCH and answer[schema.MODEL_VERSION] == published.version
        assert len(answer["items"]) == 10
        assert categories(answer).count(category) >= 8, (category, categories(answer))
        scores = [item["score"] for item in answer["items"]]
        assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


@pytest.mark.integration
def test_search_shows_only_available_items(searcher: Searcher, published: Published) -> None:
    items = published.items
    moment = items[schema.ARRIVAL_DATE].median()  # half the catalogue has not arrived yet
    context = RequestContext(timestamp=moment.to_pydatetime())
    [answer] = searcher.answer([SearchRequest(query="tents", k=20, context=context)])
    shown = items.loc[ids(answer)]
    assert len(shown) == 20
    assert (shown[schema.ARRIVAL_DATE] <= moment).all() and (shown[schema.STOCK_QUANTITY] > 0).all()
    assert answer["filtered"]["availability"] > 0


@pytest.mark.integration
def test_similar_items_share_the_category_and_exclude_the_item(searcher: Searcher, published: Published) -> None:
    # items of categories with > 10 items in stock, so that all 10 results could share the category
    items = published.items
    sources = items.index[items[schema.CATEGORY].isin(well_stocked_leaves(items))].tolist()
    assert len(sources) >= 40
    answers = searcher.answer([SimilarRequest(item_id=i, k=10, context=CONTEXT) for i in sources])
    shares = []
    for source, answer in zip(sources, answers, strict=True):
        assert answer["mode"] == MODE_SIMILAR and answer[schema.ITEM_ID] == source
        assert answer[schema.MODEL_VERSION] == published.version
        assert len(answer["items"]) == 10 and source not in ids(answer)
        shares.append(np.mean([c == published.items.loc[source, schema.CATEGORY] for c in categories(answer)]))
    assert np.mean(shares) >= 0.7, np.mean(shares)


@pytest.mark.integration
def test_personalised_search_moves_towards_preferred_categories(searcher: Searcher, published: Published) -> None:
    users = published.users.head(15)
    plain_share, personal_share = [], []
    for query in BROAD_QUERIES:
        plain = searcher.answer([SearchRequest(query=query, k=10, context=CONTEXT)])[0]
        requests = [SearchRequest(query=query, user_id=u, k=10, context=CONTEXT) for u in users[schema.USER_ID]]
        for answer, preferences in zip(searcher.answer(requests), users[schema.PREFERENCES], strict=True):
            assert answer["mode"] == MODE_PERSONALISED and answer[schema.MODEL_VERSION] == published.version
            liked = set(preferences.split(schema.PREFERENCE_SEPARATOR))
            plain_share.append(np.mean([leaf(c) in liked for c in categories(plain)]))
            personal_share.append(np.mean([leaf(c) in liked for c in categories(answer)]))
    plain, personal = np.array(plain_share), np.array(personal_share)
    assert personal.mean() > plain.mean() + 0.05, (plain.mean(), personal.mean())
    assert (personal > plain).sum() > 3 * (personal < plain).sum()  # it helps far more users than it hurts


@pytest.mark.integration
def test_personalised_search_of_an_unknown_user_is_plain_search(searcher: Searcher) -> None:
    plain, unknown = searcher.answer(
        [
            SearchRequest(query="tents", k=5, context=CONTEXT),
            SearchRequest(query="tents", user_id="never-seen", k=5, context=CONTEXT),
        ]
    )
    assert unknown["mode"] == MODE_SEARCH and unknown[schema.USER_ID] == "never-seen"
    assert ids(unknown) == ids(plain)


@pytest.mark.integration
def test_unknown_item_is_a_request_error(searcher: Searcher) -> None:
    requests = [SearchRequest(query="tents"), SimilarRequest(item_id="no-such-item")]
    with pytest.raises(RequestError, match=r"instances\[1\]\.item_id: unknown item 'no-such-item'"):
        searcher.answer(requests)


# ------------------------------------------------------------------------------------------ server and CLI
@pytest.fixture(scope="module")
def server(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with predictor(published.model_dir, tmp_path_factory.mktemp("search-server") / "predictor.log") as url:
        yield url


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + PREDICT, json=body, timeout=30)


@pytest.mark.e2e
def test_three_kinds_through_the_server(server: str, published: Published) -> None:
    user_id = published.users[schema.USER_ID].iloc[0]
    item_id = published.items.index[0]
    context = {"timestamp": LATE.isoformat()}
    body = {
        "instances": [
            {"query": "camping tent", "k": 5, "context": context},
            {"item_id": item_id, "k": 4, "context": context},
            {"query": "camping tent", "user_id": user_id, "k": 3, "context": context},
            {"user_id": user_id, "k": 2, "context": context},
        ]
    }
    response = post(server, body)
    assert response.status_code == 200, response.text
    search, similar, personal, recommended = response.json()["predictions"]
    assert search["mode"] == MODE_SEARCH and len(search["items"]) == 5
    assert set(categories(search)) == {"Sports & Outdoors|Camping|Tents"}
    assert similar["mode"] == MODE_SIMILAR and len(similar["items"]) == 4 and item_id not in ids(similar)
    assert personal["mode"] == MODE_PERSONALISED and personal[schema.USER_ID] == user_id and len(personal["items"]) == 3
    assert len(recommended["items"]) == 2 and recommended[schema.USER_ID] == user_id
    versions = {p[schema.MODEL_VERSION] for p in (search, similar, personal, recommended)}
    assert versions == {published.version}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ({"query": ""}, "instances[0].query: must not be empty or whitespace only"),
        ({"query": "   "}, "instances[0].query: must not be empty or whitespace only"),
        ({"query": "q" * (MAX_QUERY_CHARS + 1)}, "instances[0].query: String should have at most 512 characters"),
        ({"item_id": "no-such-item"}, "instances[0].item_id: unknown item 'no-such-item'"),
    ],
)
def test_bad_search_input_is_a_400(server: str, instance: dict, message: str) -> None:
    response = post(server, {"instances": [instance]})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": message}


@pytest.mark.e2e
def test_cli_search_and_similar(server: str, published: Published) -> None:
    from recsys.cli import app

    runner = CliRunner()
    item_id = published.items.index[0]
    user_id = published.users[schema.USER_ID].iloc[0]
    when = ["--timestamp", LATE.isoformat()]
    runs = {
        "search via server": ["search", "camping tent", "--k", "4", "--url", server, *when],
        "similar via server": ["similar", "--item-id", item_id, "--k", "4", "--url", server, *when],
        "personalised in-process": ["search", "camping tent", "--k", "4", "--user-id", user_id, *when],
        "similar in-process": ["similar", "--item-id", item_id, "--k", "4", *when],
    }
    answers = {}
    for name, args in runs.items():
        args = [*args, "--json"]  # the default output is a table; --json is the scripts' format
        result = runner.invoke(app, [*args, "--model-dir", str(published.model_dir)] if "in-process" in name else args)
        assert result.exit_code == 0, (name, result.output)
        answers[name] = json.loads(result.stdout)
    assert answers["search via server"]["mode"] == MODE_SEARCH
    assert answers["personalised in-process"]["mode"] == MODE_PERSONALISED
    assert ids(answers["similar in-process"]) == ids(answers["similar via server"])
    assert all(len(a["items"]) == 4 and a[schema.MODEL_VERSION] == published.version for a in answers.values())

    unknown = runner.invoke(app, ["similar", "--item-id", "no-such-item", "--url", server])
    assert unknown.exit_code == 2 and "unknown item 'no-such-item'" in unknown.output
    blank = runner.invoke(app, ["search", "   "])
    assert blank.exit_code == 2 and "query: must not be empty" in blank.output
