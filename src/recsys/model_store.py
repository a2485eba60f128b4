"""The model store: every trained model, one folder per model_version (`<store>/<model_version>/`).

`recsys train` adds what it trains, `recsys publish` and `recsys models rollback` make a stored version live
(which version is live is kept in the database registry, recsys.vector_index.registry), and the predictor,
`recommend`, `search` and `similar` load the live version from here. So "the model" is one thing for the
command line, the predictor and the pipeline. Default folder: RECSYS_HOME/models (RECSYS_MODELS_DIR).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys.config import Settings, get_settings
from recsys.model.artifacts import METRICS_FILE, MODEL_FILES, MODEL_VERSION_FILE

SWITCH_LOG = "live.log"  # one line per deliberate live switch (rollback), next to the versions


class ModelStoreError(ValueError):
    """A model dir or stored version that does not exist or is not a model."""


@dataclass(frozen=True)
class StoredModel:
    model_version: str
    path: Path
    trained_at: datetime  # when its files were written (UTC)
    metrics: dict[str, float]  # the model's test-part metrics (metrics.json "model"), empty when absent


def store_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.models_dir or settings.home / "models"


def model_version_of(model_dir: Path) -> str:
    """The model_version of a model dir; ModelStoreError naming the path when it is not one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelStoreError(f"model dir {model_dir} does not exist")
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelStoreError(f"{model_dir} is not a model dir: missing {', '.join(missing)}")
    return (model_dir / MODEL_VERSION_FILE).read_text().strip()


def add(model_dir: Path, store: Path | None = None, move: bool = False) -> StoredModel:
    """Put a model dir into the store as `<store>/<model_version>` (copied, or moved with `move`).

    Idempotent: a version already stored is kept as it is (same version = same content).
    """
    store = store or store_dir()
    version = model_version_of(model_dir)
    target = store / version
    if not (target / MODEL_VERSION_FILE).is_file():
        store.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=store))
        try:
            if move:
                os.rmdir(staging)
                shutil.move(str(model_dir), staging)
            else:
                shutil.copytree(model_dir, staging, dirs_exist_ok=True)
            staging.chmod(0o755)
            os.replace(staging, target)  # atomic: readers see the whole version or none
        except OSError:
            if not (target / MODEL_VERSION_FILE).is_file():  # not a concurrent add of the same version
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if move and Path(model_dir).exists():
        shutil.rmtree(model_dir)
    return _entry(target)


def list_models(store: Path | None = None) -> list[StoredModel]:
    """Every stored version, oldest first."""
    store = store or store_dir()
    if not store.is_dir():
        return []
    entries = [_entry(path) for path in store.iterdir() if (path / MODEL_VERSION_FILE).is_file()]
    return sorted(entries, key=lambda entry: entry.trained_at)


def get(version: str, store: Path | None = None) -> StoredModel:
    store = store or store_dir()
    path = store / version
    if "/" in version or not (path / MODEL_VERSION_FILE).is_file():
        raise ModelStoreError(f"model {version} is not in the model store {store} (`recsys models list` shows it)")
    return _entry(path)


def latest(store: Path | None = None) -> StoredModel:
    """The most recently trained stored version."""
    models = list_models(store)
    if not models:
        raise ModelStoreError(f"the model store {store or store_dir()} is empty: run `recsys train` first")
    return models[-1]


def resolve(model: str | Path | None, store: Path | None = None) -> Path:
    """The model dir named by a path or a stored model_version (None: the latest trained)."""
    if model is None:
        return latest(store).path
    path = Path(model)
    if path.exists():
        model_version_of(path)
        return path
    if "/" not in str(model) and (store or store_dir()).joinpath(str(model)).is_dir():
        return get(str(model), store).path
    raise ModelStoreError(f"{model} is neither a model dir nor a version in the model store {store or store_dir()}")


def serving_dir(model_dir: Path | None = None, settings: Settings | None = None) -> Path:
    """The folder a predictor serves from (the given one, else RECSYS_MODEL_DIR, else the store), checked now so
    that a wrong path is an error, not a server that is never ready (ModelStoreError)."""
    settings = settings or get_settings()
    return check_serving_dir(model_dir or settings.model_dir or store_dir(settings))


def check_serving_dir(model_dir: Path) -> Path:
    """A folder the predictor can load versions from: a model dir or a model store (ModelStoreError if not)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelStoreError(f"model dir {model_dir} does not exist")
    if not (model_dir / MODEL_VERSION_FILE).is_file() and not list_models(model_dir):
        raise ModelStoreError(f"{model_dir} holds no model (neither a model dir nor a model store with versions)")
    return model_dir


def log_switch(store: Path, from_version: str | None, to_version: str, reason: str) -> None:
    """Append a deliberate live switch to the store's log, so who went back from what stays on record."""
    store.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with (store / SWITCH_LOG).open("a") as log:
        log.write(f"{stamp} {reason}: {from_version or '-'} -> {to_version} (user {_user()})\n")


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER", "unknown")


def _entry(path: Path) -> StoredModel:
    version_file = path / MODEL_VERSION_FILE
    metrics: dict[str, float] = {}
    if (path / METRICS_FILE).is_file():
        metrics = dict(json.loads((path / METRICS_FILE).read_text()).get("model", {}))
    return StoredModel(
        model_version=version_file.read_text().strip(),
        path=path,
        trained_at=datetime.fromtimestamp(version_file.stat().st_mtime, UTC),
        metrics=metrics,
    )
