"""The stores feature_repo/feature_store.yaml names: Feast's own PostgreSQL online store and file offline store,
each with one change.

- Online: feature_store.yaml reads the Postgres address and credentials from ${RECSYS_FEAST_PG_*}. Feast expands
  them with os.path.expandvars, which leaves an unset ${VAR} as it is, so a plain `feast apply` without them
  ended in a pydantic traceback about the port. The config class turns that into one line naming the command
  that sets them.
- Offline: Feast's `file` store is its dask store, and validating the config imports dask (about 1 s of CPU)
  although online reads (the predictor, `recsys recommend`) never touch the offline store. Here the config
  class is light and the store class is imported only when Feast first asks for it (apply, materialize).

Feast resolves a `type: module.NameStore` by importing the module and taking `NameStoreConfig` from it, and the
store from the config's module and class name less "Config".
"""

from __future__ import annotations

import re
from typing import Any, Literal

import click
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
from feast.repo_config import FeastConfigBaseModel
from pydantic import model_validator

UNEXPANDED_VARIABLE = re.compile(r"\$\{(\w+)\}")


class FeastEnvironmentMissing(click.ClickException):
    """A click error, not a ValueError: pydantic passes it through unwrapped, and Feast's click CLI prints only
    `Error: <message>`. In our own processes it is an ordinary exception (they set the variables first)."""

    exit_code = 2


class RecsysPostgreSQLOnlineStore(PostgreSQLOnlineStore):
    """Feast's PostgreSQL online store, unchanged: only its config class checks more."""


class RecsysPostgreSQLOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    @model_validator(mode="before")
    @classmethod
    def _variables_expanded(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        missing = sorted({name for value in values.values() for name in UNEXPANDED_VARIABLE.findall(str(value))})
        if missing:
            raise FeastEnvironmentMissing(
                f'feature_store.yaml needs {", ".join(missing)}: run `eval "$(recsys feast env)"` first '
                "(or use `recsys feast apply`)"
            )
        # Feast's PostgreSQL store checks `type == "postgres"`: what this store is, whatever path named it
        return {**values, "type": "postgres"}


class FileOfflineStoreConfig(FeastConfigBaseModel):
    """Feast's `file` offline store (DaskOfflineStoreConfig has no other field either)."""

    type: Literal["recsys.feast_stores.FileOfflineStore"] = "recsys.feast_stores.FileOfflineStore"


def __getattr__(name: str) -> Any:
    """`FileOfflineStore`: Feast's dask store, imported when Feast first needs the offline store."""
    if name == "FileOfflineStore":
        from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig

        # its methods assert isinstance(config.offline_store, DaskOfflineStoreConfig): the config here is that
        # config (a `type` field only), declared so through the ABC registry (pydantic models are ABCs)
        DaskOfflineStoreConfig.register(FileOfflineStoreConfig)
        return DaskOfflineStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
