"""Feast helpers: the environment feature_store.yaml expects, apply, materialize, and online writes.

feature_store.yaml reads the Postgres address and credentials from ${RECSYS_FEAST_PG_*}; every helper here
sets them from `db.pg_params()` (RECSYS_PG_DSN or the embedded server) before Feast reads the yaml.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from psycopg import sql

from recsys import db, schema
from recsys.config import get_settings

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


def _no_type_checks(target: Any = None, **_: Any) -> Any:
    return target if target is not None else (lambda decorated: decorated)


def _skip_feast_import_time_type_checks() -> None:
    """Feast decorates its classes with typeguard's @typechecked, which re-parses and recompiles each of those
    modules at import: most of the seconds `import feast` takes (measured with -X importtime). The checks are a
    development aid (typeguard skips them under `python -O`), so they are turned off before Feast is imported."""
    if "feast" not in sys.modules:
        import typeguard

        typeguard.typechecked = _no_type_checks


_skip_feast_import_time_type_checks()

# the views `materialize` loads from the parquet files; the embedding views are written by `publish`
MATERIALIZED_VIEWS = (schema.VIEW_ITEM_FEATURES, schema.VIEW_USER_FEATURES)
MATERIALIZE_FROM = datetime(1970, 1, 1, tzinfo=UTC)


class FeatureStoreError(RuntimeError):
    """The feature repo cannot be applied, materialized or written to; the message says why."""


def feast_env() -> dict[str, str]:
    """The ${VAR}s of feature_store.yaml, from RECSYS_PG_DSN or the embedded Postgres (started on demand)."""
    params = db.pg_params()
    values = {
        "HOST": params.host,
        "PORT": str(params.port),
        "DATABASE": params.database,
        "USER": params.user,
        "PASSWORD": params.password,
        "SSLMODE": params.sslmode,
    }
    return {schema.FEAST_ENV_PREFIX + key: value for key, value in values.items()}


def resolve_repo(repo: Path | None = None) -> Path:
    path = Path(repo or get_settings().feature_repo).resolve()
    if not (path / "feature_store.yaml").is_file():
        raise FeatureStoreError(f"no feature_store.yaml in {path}")
    return path


def get_store(repo: Path | None = None) -> FeatureStore:
    """The FeatureStore of a repo folder, one per path (and database) and process; sets the environment first."""
    env = feast_env()
    os.environ.update(env)
    return _store(resolve_repo(repo), tuple(sorted(env.items())))


@lru_cache(maxsize=8)
def _store(repo: Path, env: tuple[tuple[str, str], ...]) -> FeatureStore:
    """`env` is only part of the cache key: a store keeps the connection settings it was created with."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo))


def apply(repo: Path | None = None) -> list[str]:
    """`feast apply` for the repo: creates the vector extension, registers every object and its online tables.

    Returns what is now deployed, e.g. ["entity item", ..., "feature view item_features", ...].
    Objects removed from the definitions are removed from the registry and online store too.
    """
    from feast.repo_operations import extract_objects_for_apply_delete, parse_repo

    path = resolve_repo(repo)
    db.connect().close()  # CREATE EXTENSION vector: Feast's tables need the type and Feast does not create it
    store = get_store(path)
    with _definitions_importable(path), contextlib.redirect_stdout(io.StringIO()):
        contents = parse_repo(path)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return (
        [f"entity {e.name}" for e in sorted(contents.entities, key=lambda e: e.name) if not e.name.startswith("__")]
        + [f"data source {s.name}" for s in sorted(contents.data_sources, key=lambda s: s.name)]
        + [f"feature view {v.name}" for v in sorted(contents.feature_views, key=lambda v: v.name)]
        + [f"feature service {s.name}" for s in sorted(contents.feature_services, key=lambda s: s.name)]
    )


def register(repo: Path | None = None) -> None:
    """Write the repo's definitions into its registry file only: no database statement at all.

    For a reader such as the predictor in a cluster, whose registry is a file of its own and whose database role
    may only read: `apply` (the feast-apply Job, the pipeline) creates the online tables, this only lets Feast
    find the views. The registry file is the same one `apply` would write for the same definitions.
    """
    from feast.repo_operations import parse_repo

    path = resolve_repo(repo)
    store = get_store(path)
    with _definitions_importable(path), contextlib.redirect_stdout(io.StringIO()):
        contents = parse_repo(path)
    # what `apply` infers before it writes (entity columns of the views, from their declared schemas)
    store._make_inferences(contents.data_sources, contents.entities, contents.feature_views,
                           contents.on_demand_feature_views, contents.stream_feature_views, contents.feature_services)  # fmt: skip
    registry, project = store.registry, store.project
    for source in contents.data_sources:
        registry.apply_data_source(source, project, commit=False)
    for entity in contents.entities:
        registry.apply_entity(entity, project, commit=False)
    for view in contents.feature_views:
        registry.apply_feature_view(view, project, commit=False)
    for service in contents.feature_services:
        registry.apply_feature_service(service, project, commit=False)
    registry.commit()


@contextlib.contextmanager
def _definitions_importable(repo: Path) -> Iterator[None]:
    """Feast imports each definition file by a module name relative to the cwd; keep that local to this call."""
    cwd, before = Path.cwd(), set(sys.modules)
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
        # forget the definition modules, so another repo folder's files are read afresh
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(repo)):
                del sys.modules[name]


def materialize(repo: Path | None = None, end: datetime | None = None) -> dict[str, int]:
    """Load item_features and user_features online; returns the number of entities each view holds online.

    `end` defaults to just after the latest item arrival (or now), so items that arrive later are online
    too. Idempotent: rows are upserted by entity and feature, so a second run leaves the same state.
    """
    path = resolve_repo(repo)
    store = get_store(path)
    end = end or _latest_event(store, path)
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints its own banner; callers report the counts
        store.materialize(start_date=MATERIALIZE_FROM, end_date=end, feature_views=list(MATERIALIZED_VIEWS))
    return {view: online_count(view, path) for view in MATERIALIZED_VIEWS}


def _latest_event(store: FeatureStore, repo: Path) -> datetime:
    from feast.infra.offline_stores.file_source import FileSource

    latest = datetime.now(UTC)
    for view in MATERIALIZED_VIEWS:
        source = _registered_view(store, view).batch_source
        assert isinstance(source, FileSource)
        file = Path(FileSource.get_uri_for_file_path(repo, source.path))
        if not file.is_file():
            raise FeatureStoreError(f"{file} is missing: run `recsys generate` first")
        column = pd.read_parquet(file, columns=[source.timestamp_field])[source.timestamp_field]
        if len(column):
            latest = max(latest, column.max().to_pydatetime())
    return latest + timedelta(seconds=1)


def _registered_view(store: FeatureStore, view_name: str) -> FeatureView:
    from feast.errors import FeatureViewNotFoundException

    try:
        return store.get_feature_view(view_name)
    except FeatureViewNotFoundException as exc:
        raise FeatureStoreError(f"unknown feature view {view_name!r}: run `recsys feast apply` first") from exc


def online_count(view_name: str, repo: Path | None = None) -> int:
    """How many entities a view holds in the online store (0 when its table does not exist)."""
    store = get_store(repo)
    table = f"{store.project}_{view_name}"
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(table).as_string(conn),))
        row = cur.fetchone()
        if not row or not row[0]:
            return 0
        cur.execute(sql.SQL("SELECT count(DISTINCT entity_key) FROM {}").format(sql.Identifier(table)))
        result = cur.fetchone()
    return int(result[0]) if result else 0


def write_embedding_view(view_name: str, df: pd.DataFrame, repo: Path | None = None) -> int:
    """Upsert a frame into a view's online table (publish uses it for the embedding and user_items views).

    `df` holds the view's join key, its features and schema.EVENT_TIMESTAMP. Returns the rows written.
    """
    store = get_store(repo)
    view = _registered_view(store, view_name)
    needed = {*view.join_keys, *(f.name for f in view.features), schema.EVENT_TIMESTAMP}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise FeatureStoreError(f"frame for {view_name} lacks columns {missing}")
    if df.empty:
        return 0
    store.write_to_online_store(view_name, df[sorted(needed)])
    return len(df)
