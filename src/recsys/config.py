"""Settings from the environment (prefix RECSYS_), one pydantic model shared by every command."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every knob the CLI, the pipeline components and the predictor read.

    RECSYS_PG_DSN set -> that server is used and the embedded one is never started.
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid")

    pg_dsn: str | None = Field(
        default=None, description="PostgreSQL (with pgvector) to use instead of the embedded one"
    )
    home: Path = Field(default=PROJECT_ROOT / ".recsys", description="state: embedded Postgres data dir, caches")
    data_dir: Path = Field(default=PROJECT_ROOT / "feature_repo" / "data", description="parquet files")
    feature_repo: Path = Field(default=PROJECT_ROOT / "feature_repo", description="Feast repo folder")
    models_dir: Path | None = Field(default=None, description="the model store [default: RECSYS_HOME/models]")
    model_dir: Path | None = Field(
        default=None, description="one model dir to use instead of the model store's live version"
    )
    db_timeout_s: float = Field(default=2.0, gt=0, description="statement / connect timeout for online DB calls")

    @property
    def pg_data_dir(self) -> Path:
        return self.home / "pg"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
