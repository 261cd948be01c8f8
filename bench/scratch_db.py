"""Scratch databases for the benchmarks: loopback-only PostgreSQL databases dropped and created per run."""

from __future__ import annotations

from sqlalchemy.engine import make_url

__all__ = ["LOOPBACK", "check_loopback", "postgres_version", "recreate_postgres"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_loopback(url: str) -> None:
    host = make_url(url).host or "127.0.0.1"
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to benchmark against {host}: only loopback addresses are allowed")


def _admin_conninfo(url: str) -> tuple[str, str]:
    """(libpq conninfo of the server's ``postgres`` database, name of the scratch database)."""
    parsed = make_url(url)
    parts = {"host": parsed.host or "127.0.0.1", "port": str(parsed.port or 5432)}
    parts |= {"user": parsed.username or "postgres", "dbname": "postgres"}
    if parsed.password:
        parts["password"] = str(parsed.password)
    return " ".join(f"{k}={v}" for k, v in parts.items()), parsed.database or "hie_bench"


def recreate_postgres(url: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql

    conninfo, name = _admin_conninfo(url)
    if name in ("postgres", "template0", "template1"):
        raise SystemExit(f"refusing to drop the PostgreSQL database '{name}'; name a scratch database")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def postgres_version(url: str) -> str:
    import psycopg

    conninfo, _ = _admin_conninfo(url)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    return f"PostgreSQL {row[0] if row else '?'} (synchronous_commit={sync[0] if sync else '?'})"
