"""The online store feature_repo/feature_store.yaml names: Feast's PostgreSQL store, with one more check.

feature_store.yaml reads the Postgres address and credentials from ${RECSYS_FEAST_PG_*}. Feast expands them with
os.path.expandvars, which leaves an unset ${VAR} as it is, so a plain `feast apply` without them ended in a
pydantic traceback about the port. The config class turns that into one line naming the command that sets them.

Feast resolves `type: module.NameOnlineStore` by importing the module and taking `NameOnlineStoreConfig` from it,
and the store from the config's module and class name less "Config".
"""

from __future__ import annotations

import re
from typing import Any

import click
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
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
