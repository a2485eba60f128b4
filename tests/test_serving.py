"""The KServe predictor as a real process (`python -m serving`) on a free port, over the session Postgres.

Covers the V1 and V2 contracts, readiness, >= 20 bad inputs (each 4xx with a JSON error, never 5xx), a
version switch under traffic (never a mixed answer), and a Postgres outage on a private embedded server
(503 while down, answers again after restart without restarting the predictor).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_setup import (
    copy_feature_repo,
    predictor,
    publish_model,
    settings_restored,
    setup_published,
    setup_published_in_subprocess,
    stop_postgres,
    train_model,
)

from recsys import schema
from recsys.request_models import MAX_INSTANCES, MAX_K

pytestmark = pytest.mark.e2e

PREDICT = "/v1/models/recommender:predict"
INFER = "/v2/models/recommender/infer"
CONTEXT = {"timestamp": "2030-01-01T12:00:00Z"}  # fixed: answers are deterministic and every arrival is past


@pytest.fixture(scope="module")
def setup(pg_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Trained + published model; the predictor reads models_root/<version>/ so a new version can be added."""
    root = tmp_path_factory.mktemp("serving")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    staging = root / "trained"
    with settings_restored():
        version = setup_published(tiny_data, repo, staging, seed=201)
        models = root / "models"
        models.mkdir()
        shutil.copytree(staging, models / version)
        users = pd.read_parquet(tiny_data / schema.USERS_FILE)[schema.USER_ID].tolist()
        yield {"root": root, "repo": repo, "data": tiny_data, "models": models, "version": version, "users": users}


@pytest.fixture(scope="module")
def server(setup: dict) -> Iterator[str]:
    with predictor(setup["models"], setup["root"] / "predictor.log") as url:
        yield url


def predict(url: str, body, timeout: float = 10) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(url + PREDICT, content=content, headers={"content-type": "application/json"}, timeout=timeout)


def item_ids(prediction: dict) -> list[str]:
    return [item[schema.ITEM_ID] for item in prediction["items"]]


def test_readiness_and_v1_round_trip(server: str, setup: dict) -> None:
    ready = httpx.get(server + "/v1/models/recommender", timeout=5)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    body = {
        "instances": [
            {"user_id": setup["users"][0], "k": 10, "context": CONTEXT},
            {"user": {"preferences": "Laptops|Headphones", "age": 31, "gender": "F"}, "k": 5},
            {"user_id": "never-seen-before", "k": 3},
        ]
    }
    response = predict(server, body)
    assert response.status_code == 200, response.text
    known, profile, unknown = response.json()["predictions"]
    assert known[schema.USER_ID] == setup["users"][0] and known["cold_start"] is False
    assert len(known["items"]) == 10 and known[schema.MODEL_VERSION] == setup["version"]
    assert set(known["items"][0]) == {schema.ITEM_ID, "score", schema.PRODUCT_NAME, schema.CATEGORY, schema.IMG_LINK,
                                      schema.ACTUAL_PRICE, schema.DISCOUNTED_PRICE}  # fmt: skip
    assert profile["cold_start"] is True and len(profile["items"]) == 5
    assert unknown["cold_start"] is True and unknown["source"] == "popularity" and len(unknown["items"]) == 3


def test_v2_round_trip(server: str, setup: dict) -> None:
    users = setup["users"][:3]
    body = {"inputs": [{"name": "user_id", "shape": [3], "datatype": "BYTES", "data": users},
                       {"name": "k", "shape": [1], "datatype": "INT32", "data": [4]}]}  # fmt: skip
    response = httpx.post(server + INFER, json=body, timeout=10)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["shape"] == [3, 4] and outputs["item_id"]["datatype"] == "BYTES"
    assert outputs["score"]["shape"] == [3, 4] and outputs["score"]["datatype"] == "FP32"
    assert response.json()["model_version"] == setup["version"]
    # the same answer as V1 for the first user
    v1 = predict(server, {"instances": [{"user_id": users[0], "k": 4}]}).json()["predictions"][0]
    assert outputs["item_id"]["data"][:4] == item_ids(v1)


BAD_V1 = [
    ("{not json", None),
    ("[]", "body"),
    ('"hello"', "body"),
    ("{}", "instances"),
    ('{"instances": {}}', "instances"),
    ('{"instances": []}', "instances"),
    ({"instances": [{"user_id": "u"}] * (MAX_INSTANCES + 1)}, "instances"),
    ({"instances": ["u1"]}, "instances[0]"),
    ({"instances": [{"k": 3}]}, "instances[0]"),
    ({"instances": [{"user_id": 12}]}, "instances[0].user_id"),
    ({"instances": [{"user_id": ""}]}, "instances[0].user_id"),
    ({"instances": [{"user_id": "u" * 10_000}]}, "instances[0].user_id"),
    ({"instances": [{"user_id": "u", "k": 0}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": -3}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": MAX_K + 1}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": "10"}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": 1.5}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "k": None}]}, "instances[0].k"),
    ({"instances": [{"user_id": "u", "extra": 1}]}, "instances[0].extra"),
    ({"instances": [{"user": {"age": "thirty"}}]}, "instances[0].user.age"),
    ({"instances": [{"user": {"age": 500}}]}, "instances[0].user.age"),
    ({"instances": [{"user": {"gender": ["F"]}}]}, "instances[0].user.gender"),
    ({"instances": [{"user": {"preferences": "x" * 100_000}}]}, "instances[0].user.preferences"),
    ({"instances": [{"user_id": "u", "context": {"timestamp": "tomorrow"}}]}, "instances[0].context.timestamp"),
    ({"instances": [{"user_id": "u", "context": "now"}]}, "instances[0].context"),
    ({"instances": [{"user_id": "u"}, {"user_id": "v", "k": 0}]}, "instances[1].k"),
]
BAD_V2 = [
    ({"inputs": []}, "inputs.user_id"),
    ({"inputs": [{"name": "k", "shape": [1], "datatype": "INT32", "data": [3]}]}, "inputs.user_id"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT32", "data": [3]}]}, "inputs.user_id"),
    (
        {
            "inputs": [
                {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u"]},
                {"name": "k", "shape": [1], "datatype": "INT32", "data": [0]},
            ]
        },
        "inputs.k",
    ),  # fmt: skip
    (
        {
            "inputs": [
                {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u"]},
                {"name": "k", "shape": [1], "datatype": "FP32", "data": [2.0]},
            ]
        },
        "inputs.k",
    ),  # fmt: skip
    (
        {
            "inputs": [
                {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u"]},
                {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]},
            ]
        },
        "inputs.color",
    ),  # fmt: skip
    ({"inputs": "user_id"}, "inputs"),
    ("{not json", None),
]


@pytest.mark.parametrize(("body", "field"), BAD_V1, ids=[f"v1-{i}" for i in range(len(BAD_V1))])
def test_bad_v1_input_is_a_400_naming_the_field(server: str, body, field: str | None) -> None:
    response = predict(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field is None or error.startswith(field), error
    assert "Traceback" not in error and "postgresql://" not in error


@pytest.mark.parametrize(("body", "field"), BAD_V2, ids=[f"v2-{i}" for i in range(len(BAD_V2))])
def test_bad_v2_input_is_a_400_naming_the_field(server: str, body, field: str | None) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(server + INFER, content=content, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field is None or field in error, error
    assert "Traceback" not in error


def test_unknown_model_is_a_404_json(server: str) -> None:
    response = httpx.post(server + "/v1/models/nope:predict", json={"instances": [{"user_id": "u"}]}, timeout=5)
    assert response.status_code == 404 and "error" in response.json()


def test_browse_routes_list_users_profiles_items_and_categories(server: str, setup: dict) -> None:
    """GET /v1/users, /v1/users/{id}, /v1/items/{id}, /v1/categories (serving/browse_routes.py), read-only."""
    users = pd.read_parquet(setup["data"] / schema.USERS_FILE).set_index(schema.USER_ID)
    items = pd.read_parquet(setup["data"] / schema.ITEMS_FILE).set_index(schema.ITEM_ID)
    listed = httpx.get(server + "/v1/users", params={"limit": 5}, timeout=10)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    listed_ids = [u[schema.USER_ID] for u in body["users"]]
    assert listed_ids == sorted(listed_ids) and len(listed_ids) == 5
    assert 5 <= body["total"] <= len(users) and body[schema.MODEL_VERSION] == setup["version"]
    first = body["users"][0]
    expected = users.loc[first[schema.USER_ID]]
    assert (first[schema.USER_NAME], first[schema.AGE], first[schema.GENDER], first[schema.PREFERENCES]) == (
        expected[schema.USER_NAME], int(expected[schema.AGE]), expected[schema.GENDER], expected[schema.PREFERENCES]
    )  # fmt: skip

    profile = httpx.get(f"{server}/v1/users/{first[schema.USER_ID]}", timeout=10).json()
    assert profile["known"] is True and profile[schema.USER_NAME] == expected[schema.USER_NAME]
    assert profile["recent"] and all(i[schema.ITEM_ID] in items.index for i in profile["recent"])
    assert len({i[schema.ITEM_ID] for i in profile["recent"]}) == len(profile["recent"])  # each item once
    assert set(profile["history_counts"]) == {"purchased", "carted", "viewed"}

    item_id = str(items.index[3])
    item = httpx.get(f"{server}/v1/items/{item_id}", timeout=10).json()
    row = items.loc[item_id]
    assert (
        item[schema.PRODUCT_NAME] == row[schema.PRODUCT_NAME]
        and item[schema.ABOUT_PRODUCT] == row[schema.ABOUT_PRODUCT]
    )
    assert item[schema.DISCOUNTED_PRICE] == pytest.approx(row[schema.DISCOUNTED_PRICE])
    assert item[schema.STOCK_QUANTITY] == row[schema.STOCK_QUANTITY]

    categories = httpx.get(server + "/v1/categories", timeout=10).json()["categories"]
    assert set(categories) == set(items[schema.CATEGORY])

    recommended = predict(server, {"instances": [{"user_id": first[schema.USER_ID], "k": 3}]}).json()
    for answer_item in recommended["predictions"][0]["items"]:  # cards carry prices too
        assert answer_item[schema.ACTUAL_PRICE] == pytest.approx(
            items.loc[answer_item[schema.ITEM_ID], schema.ACTUAL_PRICE]
        )


def test_a_logged_event_is_the_newest_recent_activity(server: str, setup: dict) -> None:
    user = setup["users"][-1]
    profile = httpx.get(f"{server}/v1/users/{user}", timeout=10).json()
    [prediction] = predict(server, {"instances": [{"user_id": user, "k": 1}]}).json()["predictions"]
    item_id = prediction["items"][0][schema.ITEM_ID]
    event = {"event_id": f"browse-{user}", "user_id": user, "item_id": item_id, "interaction_type": "purchase"}
    assert httpx.post(server + "/v1/events", json={"events": [event]}, timeout=10).json()["accepted"] == 1
    after = httpx.get(f"{server}/v1/users/{user}", timeout=10).json()
    assert after["recent"][0][schema.ITEM_ID] == item_id and after["recent"][0][schema.INTERACTION_TYPE] == "purchase"
    assert after["history_counts"]["purchased"] == profile["history_counts"]["purchased"] + 1


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/v1/users/nobody-ever", 404, "user_id: unknown user 'nobody-ever'"),
        ("/v1/items/no-such-item", 404, "item_id: unknown item 'no-such-item'"),
        ("/v1/users?limit=0", 400, "limit: expected 1..1000, got 0"),
        ("/v1/users?limit=5000", 400, "limit: expected 1..1000, got 5000"),
        (
            "/v1/users?limit=abc",
            400,
            "query.limit: Input should be a valid integer, unable to parse string as an integer",
        ),
        ("/v1/users/a%00b", 400, "user_id: must not contain NUL characters or lone surrogates"),
        ("/v1/items/" + "x" * 200, 400, "item_id: expected 1..128 characters"),
    ],
)
def test_browse_routes_reject_bad_and_unknown_ids(server: str, path: str, status: int, error: str) -> None:
    response = httpx.get(server + path, timeout=10)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_cli_recommend_through_the_predictor(server: str, setup: dict) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    result = CliRunner().invoke(
        app, ["recommend", "--user-id", setup["users"][3], "--k", "3", "--url", server, "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer[schema.USER_ID] == setup["users"][3] and len(answer["items"]) == 3


def test_cli_recommend_in_process_matches_the_predictor(server: str, setup: dict) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    args = ["recommend", "--user-id", setup["users"][4], "--k", "5", "--timestamp", CONTEXT["timestamp"], "--json"]
    result = CliRunner().invoke(app, [*args, "--model-dir", str(setup["models"])])
    assert result.exit_code == 0, result.output
    local = json.loads(result.stdout)
    remote = predict(server, {"instances": [{"user_id": setup["users"][4], "k": 5, "context": CONTEXT}]})
    assert item_ids(local) == item_ids(remote.json()["predictions"][0])


def test_recsys_serve_command_and_clean_stop(setup: dict) -> None:
    log = setup["root"] / "recsys-serve.log"
    with predictor(setup["models"], log, via_cli=True) as url:
        response = predict(url, {"instances": [{"user_id": setup["users"][0], "k": 2}]})
    assert response.status_code == 200 and len(response.json()["predictions"][0]["items"]) == 2
    text = log.read_text()
    assert f"serving model_version {setup['version']}" in text
    assert "database pool closed" in text  # SIGTERM -> ModelServer.stop -> RecommenderModel.stop


def test_version_switch_under_traffic_never_mixes(server: str, setup: dict) -> None:
    """Publish a second model while clients call: every answer comes whole from the old or the new version.

    The profile instance goes through the user tower, so its answer is a pure function of the version:
    each one must equal that version's answer exactly; the known user in the same call must carry the same
    version.
    """
    profile = {"user": {"preferences": "Board Games|Laptops", "age": 40, "gender": "M"}, "k": 10, "context": CONTEXT}
    body = {"instances": [profile, {"user_id": setup["users"][5], "k": 10, "context": CONTEXT}]}
    before = predict(server, body).json()["predictions"][0]
    assert before[schema.MODEL_VERSION] == setup["version"]

    answers: list[httpx.Response] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                answers.append(http.post(server + PREDICT, json=body))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        staging = setup["root"] / "trained-2"
        new_version = train_model(setup["data"], staging, seed=202)
        assert new_version != setup["version"]
        shutil.copytree(staging, setup["models"] / new_version)  # the tower first, then the vectors go live
        publish_model(setup["models"] / new_version, setup["repo"])
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and predict(server, body).json()["predictions"][0][schema.MODEL_VERSION] != new_version
        ):
            time.sleep(0.2)
        time.sleep(0.5)  # a little traffic on the new version too
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    after = predict(server, body).json()["predictions"][0]
    assert after[schema.MODEL_VERSION] == new_version and item_ids(after) != item_ids(before)
    assert {r.status_code for r in answers} == {200}
    expected = {setup["version"]: item_ids(before), new_version: item_ids(after)}
    seen = set()
    for response in answers:
        first, second = response.json()["predictions"]
        assert first[schema.MODEL_VERSION] == second[schema.MODEL_VERSION]
        assert item_ids(first) == expected[first[schema.MODEL_VERSION]]
        seen.add(first[schema.MODEL_VERSION])
    assert seen == {setup["version"], new_version}


# ------------------------------------------------------------------------------------------ database outage
def test_database_outage_503_then_recovers_without_restart(private_postgres, setup: dict, tmp_path: Path) -> None:
    dsn = private_postgres.get_uri(database="postgres")
    repo = copy_feature_repo(tmp_path / "feature_repo", setup["data"])
    model_dir = tmp_path / "model"
    version = setup_published_in_subprocess(setup["data"], repo, model_dir, seed=201, dsn=dsn)
    env = {"RECSYS_PG_DSN": dsn, "RECSYS_FEATURE_REPO": str(repo), "RECSYS_DATA_DIR": str(repo / "data")}
    body = {"instances": [{"user_id": setup["users"][0], "k": 5}]}
    with predictor(model_dir, tmp_path / "predictor.log", env=env) as url:
        assert predict(url, body).json()["predictions"][0][schema.MODEL_VERSION] == version
        stop_postgres(private_postgres)
        statuses = [predict(url, body).status_code for _ in range(3)]
        assert set(statuses) == {503}, statuses
        time.sleep(3)  # the poller notices
        assert httpx.get(url + "/v1/models/recommender", timeout=5).status_code == 503
        down = predict(url, body)
        assert down.status_code == 503 and "postgresql://" not in down.text and "Traceback" not in down.text
        private_postgres.ensure_postgres_running()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and predict(url, body).status_code != 200:
            time.sleep(0.5)
        response = predict(url, body)
        assert response.status_code == 200, response.text
        assert httpx.get(url + "/v1/models/recommender", timeout=5).status_code == 200
