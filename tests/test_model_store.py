"""The model store (recsys.model_store) and the commands around it: train adds, publish makes live, rollback
goes back on purpose, and recommend / serve find the live version without being told where it is."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import model_store
from recsys.cli import app
from recsys.config import get_settings
from recsys.model.artifacts import MODEL_FILES, MODEL_VERSION_FILE


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """RECSYS_HOME in a temporary folder, so the model store starts empty."""
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECSYS_MODEL_DIR", raising=False)
    monkeypatch.delenv("RECSYS_MODELS_DIR", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def fake_model_dir(path: Path, version: str) -> Path:
    """A folder with every model file (contents irrelevant to the store) and the given model_version."""
    path.mkdir(parents=True)
    for name in MODEL_FILES:
        (path / name).write_text("{}")
    (path / MODEL_VERSION_FILE).write_text(version + "\n")
    return path


@pytest.mark.unit
def test_add_list_get_and_resolve(home: Path, tmp_path: Path) -> None:
    store = model_store.store_dir()
    assert store == home / "models" and model_store.list_models() == []
    with pytest.raises(model_store.ModelStoreError, match="recsys train"):
        model_store.resolve(None)
    first = model_store.add(fake_model_dir(tmp_path / "a", "aaaa"))
    moved = fake_model_dir(tmp_path / "b", "bbbb")
    second = model_store.add(moved, move=True)
    assert not moved.exists() and first.path == store / "aaaa" and second.path == store / "bbbb"
    assert model_store.add(first.path) == first  # already stored: kept as it is
    assert [m.model_version for m in model_store.list_models()] == ["aaaa", "bbbb"]
    assert model_store.resolve(None) == second.path and model_store.resolve("aaaa") == first.path
    assert model_store.resolve(str(tmp_path / "a")) == tmp_path / "a"
    with pytest.raises(model_store.ModelStoreError, match="recsys models list"):
        model_store.get("cccc")
    with pytest.raises(model_store.ModelStoreError, match="neither a model dir nor a version"):
        model_store.resolve("my-model")
    (tmp_path / "half").mkdir()
    with pytest.raises(model_store.ModelStoreError, match="not a model dir: missing"):
        model_store.add(tmp_path / "half")


@pytest.mark.unit
@pytest.mark.parametrize("command", [["serve"], ["recommend", "--user-id", "u1"], ["similar", "--item-id", "i1"]])
def test_a_wrong_model_dir_is_an_error_at_once(home: Path, tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--model-dir", str(tmp_path / "typo")])
    assert result.exit_code == 2 and f"model dir {tmp_path / 'typo'} does not exist" in result.output
    result = CliRunner().invoke(app, command)  # nothing trained yet: the empty store is named
    assert result.exit_code == 2 and "recsys train" in result.output


@pytest.mark.unit
def test_serve_on_a_busy_port_fails_before_loading(home: Path, tmp_path: Path) -> None:
    model = fake_model_dir(tmp_path / "m", "aaaa")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--model-dir", str(model), "--http-port", str(port)])
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is not free" in result.output and "--http-port" in result.output


@pytest.mark.unit
def test_publish_of_something_that_is_no_model_names_it(home: Path) -> None:
    result = CliRunner().invoke(app, ["publish", "--model", "my-model"])
    assert result.exit_code == 2 and "my-model is neither a model dir nor a version" in result.output
    result = CliRunner().invoke(app, ["publish"])
    assert result.exit_code == 2 and "recsys train" in result.output


@pytest.mark.integration
def test_train_publish_recommend_then_roll_back(
    pg_dsn: str, home: Path, feature_repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's path with no paths given, then a second model, a refused accidental downgrade and a rollback
    that a running serving state picks up without a restart."""
    import pandas as pd
    from test_publish import perturbed_copy, reset_database

    from recsys import feature_store
    from recsys.serving_state import ServingState

    monkeypatch.setenv("RECSYS_FEATURE_REPO", str(feature_repo_copy))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(feature_repo_copy / "data"))
    get_settings.cache_clear()
    reset_database()
    feature_store.apply(feature_repo_copy)
    feature_store.materialize(feature_repo_copy)
    runner = CliRunner()

    trained = runner.invoke(app, ["train", "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    [first] = model_store.list_models()
    assert f"stored in {first.path}" in trained.output and "recsys publish" in trained.output
    published = runner.invoke(app, ["publish"])
    assert published.exit_code == 0, published.output
    user = pd.read_parquet(feature_repo_copy / "data" / "recommendation_users.parquet")["user_id"].iloc[0]
    answer = runner.invoke(app, ["recommend", "--user-id", user, "--k", "3", "--json"])
    assert answer.exit_code == 0, answer.output
    assert first.model_version in answer.stdout

    second_version = perturbed_copy(first.path, tmp_path / "second")
    assert runner.invoke(app, ["publish", "--model", str(tmp_path / "second")]).exit_code == 0
    state = ServingState.from_settings(poll=False)  # a serving process started before the rollback
    try:
        assert state.model_version == second_version
        refused = runner.invoke(app, ["publish", "--model", first.model_version])
        assert refused.exit_code == 1 and f"recsys models rollback {first.model_version}" in refused.output
        rolled = runner.invoke(app, ["models", "rollback", first.model_version])
        assert rolled.exit_code == 0, rolled.output
        assert state.refresh_version() == first.model_version and state.ready()
    finally:
        state.close()
    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    live_rows = [line for line in listed.output.splitlines() if line.rstrip(" │").endswith("live")]
    assert len(live_rows) == 1 and first.model_version in live_rows[0] and second_version in listed.output
    log = (model_store.store_dir() / model_store.SWITCH_LOG).read_text()
    assert f"rollback: {second_version} -> {first.model_version}" in log
