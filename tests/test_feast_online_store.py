"""The online store feature_store.yaml names (recsys.feast_online_store): plain `feast apply` in feature_repo/, as
the replaced system documented it, is one line when the connection variables are unset and works after
`eval "$(recsys feast env)"`."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import db, schema
from recsys.cli import app

FEAST = str(Path(sys.executable).with_name("feast"))
DEFINITIONS_ONLY = shutil.ignore_patterns("data", "__pycache__")


def env_without_feast_variables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(schema.FEAST_ENV_PREFIX)}


@pytest.mark.unit
def test_unexpanded_variables_are_one_error_naming_them_and_the_command() -> None:
    from recsys.feast_online_store import FeastEnvironmentMissing, RecsysPostgreSQLOnlineStoreConfig

    with pytest.raises(FeastEnvironmentMissing) as raised:
        RecsysPostgreSQLOnlineStoreConfig(
            type="recsys.feast_online_store.RecsysPostgreSQLOnlineStore",
            host="db",
            port="${RECSYS_FEAST_PG_PORT}",
            database="recsys",
            user="${RECSYS_FEAST_PG_USER}",
            password="x",
        )
    message = raised.value.format_message()
    assert "RECSYS_FEAST_PG_PORT, RECSYS_FEAST_PG_USER:" in message
    assert 'eval "$(recsys feast env)"' in message
    assert raised.value.exit_code == 2


@pytest.mark.unit
def test_yaml_type_resolves_to_feasts_postgres_store() -> None:
    import yaml
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStore
    from feast.repo_config import get_online_config_from_type

    repo = Path(__file__).resolve().parents[1] / "feature_repo"
    online = yaml.safe_load((repo / "feature_store.yaml").read_text())["online_store"]
    filled = {**online, "host": "db", "port": "5433", "database": "d", "user": "u", "password": "p", "sslmode": "x"}
    config = get_online_config_from_type(online["type"])(**filled)
    assert config.type == "postgres"  # Feast's PostgreSQL store asserts this
    assert config.port == 5433
    assert config.vector_enabled is True
    assert isinstance(get_online_store_from_config(config), PostgreSQLOnlineStore)


@pytest.mark.integration
def test_plain_feast_apply_without_the_variables_fails_in_one_line(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(Path(__file__).resolve().parents[1] / "feature_repo", repo, ignore=DEFINITIONS_ONLY)
    done = subprocess.run(
        [FEAST, "apply"], cwd=repo, env=env_without_feast_variables(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "RECSYS_FEAST_PG_PORT" in lines[0]
    assert "recsys feast env" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.integration
def test_plain_feast_apply_works_after_recsys_feast_env(pg_dsn: str, feature_repo_copy: Path) -> None:
    exported = CliRunner().invoke(app, ["feast", "env"])
    assert exported.exit_code == 0, exported.output
    env = env_without_feast_variables()
    for line in exported.output.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    done = subprocess.run([FEAST, "apply"], cwd=feature_repo_copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name = %s",
            (f"{schema.FEAST_PROJECT}_{schema.VIEW_ITEM_EMBEDDING}",),
        )
        assert cur.fetchone() is not None
