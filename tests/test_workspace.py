"""pipelines.workspace: a local pipeline run never replaces the user's own parquet files unless told to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines import workspace
from recsys import schema
from recsys.cli import app
from recsys.config import get_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def user_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"))
    monkeypatch.setenv("RECSYS_FEATURE_REPO", str(repo))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(repo / "data"))
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield repo
    get_settings.cache_clear()


def write_data(folder: Path, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in schema.DATA_FILES:
        (folder / name).write_bytes(content)


def test_an_empty_repo_is_used_itself(user_repo: Path) -> None:
    assert workspace.choose(overwrite=False) == workspace.Workspace(user_repo, [])


def test_the_users_files_send_the_run_to_a_copy_and_stay_untouched(user_repo: Path, tmp_path: Path) -> None:
    write_data(user_repo / "data", b"mine")
    chosen = workspace.choose(overwrite=False)
    assert chosen.feature_repo == tmp_path / "home" / workspace.RUN_REPO_FOLDER
    assert (chosen.feature_repo / "feature_store.yaml").is_file()
    assert not list((chosen.feature_repo / "data").glob("*.parquet"))
    assert sorted(p.name for p in chosen.user_files_kept) == sorted(schema.DATA_FILES)
    assert workspace.choose(overwrite=True).feature_repo == user_repo  # told to: the repo itself

    write_data(chosen.feature_repo / "data", b"the run's")  # what a run staged there
    (chosen.feature_repo / "data" / workspace.FEAST_REGISTRY_FILE).write_bytes(b"registry")
    workspace.record_run(chosen, user_repo)
    assert all((user_repo / "data" / name).read_bytes() == b"mine" for name in schema.DATA_FILES)
    assert (user_repo / "data" / workspace.FEAST_REGISTRY_FILE).read_bytes() == b"registry"  # it had none


def test_files_a_run_wrote_may_be_replaced_by_the_next_run(user_repo: Path) -> None:
    write_data(user_repo / "data", b"a run's")
    workspace.record_run(workspace.Workspace(user_repo, []), user_repo)
    assert workspace.choose(overwrite=False).feature_repo == user_repo
    (user_repo / "data" / schema.USERS_FILE).write_bytes(b"edited by the user")
    assert workspace.choose(overwrite=False).user_files_kept == [user_repo / "data" / schema.USERS_FILE]


def test_pipeline_data_folder_must_hold_the_three_files(user_repo: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pipeline", "run", "--local", "--data", str(tmp_path)])
    assert result.exit_code == 2 and f"--data {tmp_path} lacks recommendation_users.parquet" in result.output
