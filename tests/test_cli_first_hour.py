"""A new user's usual mistakes (issue 17): each one gets a one-line, actionable message and the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import get_settings
from recsys.contract import DEFAULT_PREFERENCE_STRENGTH

pytestmark = pytest.mark.unit

DOWN_DSN = "postgresql://shopper:s3cret-pw@127.0.0.1:1/shop"  # port 1: nothing listens


def every_option() -> list[tuple[str, click.Option]]:
    command = typer.main.get_command(app)
    ctx = click.Context(command)
    found = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        leaves = (
            [(f"{name} {leaf}", sub.get_command(ctx, leaf)) for leaf in sub.list_commands(ctx)]
            if hasattr(sub, "list_commands")
            else [(name, sub)]
        )
        found += [(path, p) for path, leaf in leaves for p in leaf.params if p.param_type_name == "option"]
    return found


def test_help_keeps_every_bracketed_default() -> None:
    """Rich markup used to swallow "[default: ...]" in 16 options' help."""
    documented = [(path, p) for path, p in every_option() if "[default:" in (p.help or "")]
    assert len(documented) >= 10
    for path, option in documented:
        result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0
        default = option.help[option.help.index("[default:") :]
        assert default in " ".join(result.output.split()), (path, option.name)


def test_help_names_the_environment_variable_behind_a_settings_default() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    text = " ".join(result.output.split())
    assert "[default: feature_repo/data, env RECSYS_DATA_DIR]" in text and "RECSYS_MODELS_DIR" in text
    result = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "250"})
    assert f"[default: {DEFAULT_PREFERENCE_STRENGTH}]" in " ".join(result.output.split())


@pytest.fixture()
def database_down(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RECSYS_PG_DSN", DOWN_DSN)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_db_status_fails_when_the_database_is_down(database_down: None) -> None:
    result = CliRunner().invoke(app, ["db", "status"])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output and "Connection refused" in result.output
    assert "s3cret-pw" not in result.output


def test_a_database_error_names_host_port_and_reason_never_the_password(database_down: None) -> None:
    from recsys import db

    with pytest.raises(db.DatabaseError) as caught:
        db.connect()
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1 (database shop, user shopper): ")
    assert "Connection refused" in message and "s3cret-pw" not in message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend"], "give --user-id, or a new user's --preferences/--age/--gender"),
        (["recommend", "--user-id", "u1", "--k", "0"], "--k: "),
        (["recommend", "--age", "-4"], "--age: "),
        (["recommend", "--user-id", "u1", "--timestamp", "yesterday"], "--timestamp: "),
    ],
)
def test_recommend_mistakes_name_the_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output
    assert "instances[0]" not in result.output


def test_an_image_model_error_is_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers
    import torch

    from recsys.images import ImageError, load_pipeline

    reason = "We could not connect to the Hub to load this model " + "and its configuration files " * 12 + "(end)"

    def unreachable(*_: object, **__: object) -> None:
        raise OSError(reason + "\nsecond line of detail")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", unreachable)
    with pytest.raises(ImageError) as caught:
        load_pipeline("someone/some-model", "cpu", torch.float32)
    assert reason in str(caught.value) and "second line" not in str(caught.value)


def test_no_runtime_dir_warning_without_xdg_runtime_dir(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    code = f"from pathlib import Path; from recsys import db; db._embedded_server(Path(r'{tmp_path}'), start=False)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
