"""The online store feature_repo/feature_store.yaml names: Feast's PostgreSQL store, plus one check of its settings.

feature_store.yaml reads the Postgres address and credentials from ${RECSYS_FEAST_PG_*}. Feast expands them with
os.path.expandvars, which leaves an unset ${VAR} as it is, so a plain `feast apply` without them ended in a pydantic
traceback about the port. This config class turns that into one line that names the command setting them.
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
    """Feast finds this class by the `type` path in feature_store.yaml and its config class by the name + Config."""


class RecsysPostgreSQLOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    @model_validator(mode="before")
    @classmethod
    def _variables_expanded(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        missing = sorted({name for value in values.values() for name in UNEXPANDED_VARIABLE.findall(str(value))})
        if missing:
            raise FeastEnvironmentMissing(
                f"feature_store.yaml needs {', '.join(missing)}: run `eval \"$(recsys feast env)\"` first "
                "(or use `recsys feast apply`)"
            )
        # Feast's PostgreSQL store checks `type == "postgres"`: what this store is, whatever path named it
        return {**values, "type": "postgres"}
