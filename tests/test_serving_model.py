"""serving/model.py in-process, the way KServe's own model servers test theirs (sklearnserver's test_model).

The RecommenderModel object is built in the test over the session Postgres with a tiny trained + published
model, loaded, and called as KServe's data plane calls it (`model(body, headers)`) with V1 dicts and V2
`InferRequest`s: no HTTP server, no subprocess. Errors are KServe's exception types; KServe's REST server turns
them into status codes with the handlers of kserve.errors, which the tests apply to check status and body.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kserve import InferInput, InferRequest, InferResponse
from kserve.errors import InvalidInput, ModelNotReady, invalid_input_handler, model_not_ready_handler
from serving_setup import copy_feature_repo, settings_restored, setup_published

from recsys import schema
from recsys.contract import SERVED_MODEL_NAME
from recsys.response_models import (
    PREDICT_RESPONSE,
    Recommendation,
    ResponseItem,
    SearchAnswer,
    SimilarAnswer,
)
from serving.model import RecommenderModel

pytestmark = pytest.mark.integration

CONTEXT = {"timestamp": "2030-01-01T12:00:00Z"}  # fixed: every generated item has arrived by then
STATUS_HANDLERS = {InvalidInput: invalid_input_handler, ModelNotReady: model_not_ready_handler}


@dataclass(frozen=True)
class Published:
    model_dir: Path
    version: str
    users: list[str]
    items: pd.DataFrame  # indexed by item_id


@pytest.fixture(scope="module")
def published(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("serving-model")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    with settings_restored():
        version = setup_published(tiny_data, repo, root / "model", seed=301)
        yield Published(
            model_dir=root / "model",
            version=version,
            users=pd.read_parquet(tiny_data / schema.USERS_FILE)[schema.USER_ID].tolist(),
            items=pd.read_parquet(tiny_data / schema.ITEMS_FILE).set_index(schema.ITEM_ID),
        )


@pytest.fixture(scope="module")
def model(published: Published) -> Iterator[RecommenderModel]:
    server = RecommenderModel(SERVED_MODEL_NAME, model_dir=published.model_dir)
    assert server.load() and server.ready
    assert asyncio.run(server.healthy())
    yield server
    server.stop()


def call(model: RecommenderModel, body: dict | InferRequest) -> Any:
    """What KServe's data plane does with a request body: model(body, headers) -> (response, response headers)."""
    response, _ = asyncio.run(model(body, headers={}))
    return response


def http_answer(exc: Exception) -> tuple[int, dict]:
    """The status and JSON body KServe's REST server sends for an exception predict raised."""
    response = asyncio.run(STATUS_HANDLERS[type(exc)](None, exc))
    return response.status_code, json.loads(response.body)


def v2_request(user_ids: list[str], k: list[int] | None = None, k_type: str = "INT32") -> InferRequest:
    inputs = [InferInput(name="user_id", shape=[len(user_ids)], datatype="BYTES", data=user_ids)]
    if k is not None:
        inputs.append(InferInput(name="k", shape=[len(k)], datatype=k_type, data=k))
    return InferRequest(model_name=SERVED_MODEL_NAME, infer_inputs=inputs)


def test_v1_recommendations_have_the_exact_shape(model: RecommenderModel, published: Published) -> None:
    body = {
        "instances": [
            {"user_id": published.users[0], "k": 10, "context": CONTEXT},
            {"user": {"preferences": "Laptops|Headphones", "age": 31, "gender": "F"}, "k": 5, "context": CONTEXT},
            {"user_id": "never-seen-before", "k": 3, "context": CONTEXT},
        ]
    }
    response = call(model, body)
    assert PREDICT_RESPONSE.validate_python(response) == response  # exactly the typed shape, no extra keys
    known, profile, unknown = response["predictions"]
    for prediction in (known, profile, unknown):
        assert set(prediction) == Recommendation.__required_keys__
        assert prediction[schema.MODEL_VERSION] == published.version
        assert all(set(item) == ResponseItem.__required_keys__ for item in prediction["items"])
    assert ResponseItem.__required_keys__ == {schema.ITEM_ID, "score", schema.PRODUCT_NAME, schema.CATEGORY,
                                              schema.IMG_LINK, schema.ACTUAL_PRICE, schema.DISCOUNTED_PRICE}  # fmt: skip
    assert [len(p["items"]) for p in (known, profile, unknown)] == [10, 5, 3]
    assert [p["source"] for p in (known, profile, unknown)] == ["stored_embedding", "user_tower", "popularity"]
    assert [p["cold_start"] for p in (known, profile, unknown)] == [False, True, True]
    assert known[schema.USER_ID] == published.users[0] and profile[schema.USER_ID] is None
    first = known["items"][0]
    assert first[schema.PRODUCT_NAME] == published.items.loc[first[schema.ITEM_ID], schema.PRODUCT_NAME]
    scores = [item["score"] for item in known["items"]]
    assert scores == sorted(scores, reverse=True)


def test_v1_search_and_similar_have_the_exact_shape(model: RecommenderModel, published: Published) -> None:
    item_id = published.items.index[0]
    body = {
        "instances": [
            {"query": "camping tent", "k": 4, "context": CONTEXT},
            {"item_id": item_id, "k": 3, "context": CONTEXT},
            {"user_id": published.users[1], "k": 2, "context": CONTEXT},
        ]
    }
    search, similar, recommended = call(model, body)["predictions"]
    assert set(search) == SearchAnswer.__required_keys__ and search["mode"] == "search"
    assert search["query"] == "camping tent" and search[schema.USER_ID] is None and len(search["items"]) == 4
    assert set(similar) == SimilarAnswer.__required_keys__ and similar["mode"] == "similar"
    assert similar[schema.ITEM_ID] == item_id and len(similar["items"]) == 3
    assert item_id not in [item[schema.ITEM_ID] for item in similar["items"]]
    assert set(search["filtered"]) == set(similar["filtered"]) == {"availability"}
    assert set(recommended) == Recommendation.__required_keys__ and len(recommended["items"]) == 2
    assert {p[schema.MODEL_VERSION] for p in (search, similar, recommended)} == {published.version}


def test_v2_infer_request_answers_item_ids_and_scores(model: RecommenderModel, published: Published) -> None:
    users = published.users[:3]
    response = call(model, v2_request(users, k=[4]))
    assert isinstance(response, InferResponse)
    assert response.model_name == SERVED_MODEL_NAME and response.model_version == published.version
    rest, _ = response.to_rest()
    outputs = {o["name"]: o for o in rest["outputs"]}
    assert set(outputs) == {"item_id", "score"}
    assert outputs["item_id"]["shape"] == [3, 4] and outputs["item_id"]["datatype"] == "BYTES"
    assert outputs["score"]["shape"] == [3, 4] and outputs["score"]["datatype"] == "FP32"
    assert len(outputs["item_id"]["data"]) == len(outputs["score"]["data"]) == 12
    # row i is what V1 answers for user i
    v1 = call(model, {"instances": [{"user_id": u, "k": 4} for u in users]})["predictions"]
    assert outputs["item_id"]["data"] == [item[schema.ITEM_ID] for p in v1 for item in p["items"]]
    assert outputs["score"]["data"] == pytest.approx([item["score"] for p in v1 for item in p["items"]], rel=1e-6)
    # k per user, and the default k of 10 without a k input
    per_user = call(model, v2_request(users[:2], k=[1, 2])).to_rest()[0]["outputs"]
    assert [o["shape"] for o in per_user] == [[2, 2], [2, 2]]
    assert per_user[0]["data"][1] == "" and per_user[1]["data"][1] == 0.0  # the first row (k = 1) is padded
    assert call(model, v2_request(users[:1])).to_rest()[0]["outputs"][0]["shape"] == [1, 10]


BAD_INPUT = [
    ({}, "instances: missing"),
    ({"instances": []}, "instances: empty"),
    ({"instances": [{"user_id": "u", "k": 0}]}, "instances[0].k"),
    ({"instances": [{"user": {"age": "thirty"}}]}, "instances[0].user.age"),
    ({"instances": [{"query": "  "}]}, "instances[0].query: must not be empty"),
    ({"instances": [{"query": "tents"}, {"item_id": "no-such-item"}]}, "instances[1].item_id: unknown item"),
    (v2_request(["u1"], k=[2.0], k_type="FP32"), "inputs.k: datatype must be an integer type"),
    (v2_request(["u1"], k=[0]), "inputs.k: each k must be an integer"),
    (v2_request(["u1", "u2", "u3"], k=[1, 2]), "inputs.k: give one k or one per user_id"),
    (
        InferRequest(model_name=SERVED_MODEL_NAME, infer_inputs=[InferInput("user_id", [1], "INT32", [3])]),
        "inputs.user_id",
    ),
    (InferRequest(model_name=SERVED_MODEL_NAME, infer_inputs=[InferInput("k", [1], "INT32", [3])]), "inputs.user_id"),
]


@pytest.mark.parametrize(("body", "message"), BAD_INPUT, ids=[f"bad-{i}" for i in range(len(BAD_INPUT))])
def test_bad_input_is_invalid_input_answered_400(model: RecommenderModel, body: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call(model, body)
    assert str(caught.value).startswith(message), caught.value
    assert http_answer(caught.value) == (400, {"error": str(caught.value)})


def test_not_ready_is_model_not_ready_answered_503(published: Published, tmp_path: Path) -> None:
    """Three ways not to be ready: never loaded, no model of the live version, stopped."""
    never_loaded = RecommenderModel(SERVED_MODEL_NAME, model_dir=published.model_dir)
    with pytest.raises(ModelNotReady) as caught:
        call(never_loaded, {"instances": [{"user_id": "u"}]})
    assert http_answer(caught.value)[0] == 503

    other = tmp_path / "model"
    shutil.copytree(published.model_dir, other)
    (other / "model_version").write_text("0000000000000000\n")
    mismatched = RecommenderModel(SERVED_MODEL_NAME, model_dir=other)
    mismatched.load()
    try:
        assert not asyncio.run(mismatched.healthy())
        for body in ({"instances": [{"user_id": published.users[0]}]}, v2_request(published.users[:1])):
            with pytest.raises(ModelNotReady, match="not ready") as caught:
                call(mismatched, body)
            status, answer = http_answer(caught.value)
            assert status == 503 and "postgresql://" not in answer["error"]
    finally:
        mismatched.stop()
    with pytest.raises(ModelNotReady):
        call(mismatched, {"instances": [{"user_id": published.users[0]}]})
