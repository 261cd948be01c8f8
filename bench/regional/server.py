"""The server under test: a scratch database, ``hie serve`` with production settings, and what the machine is.

SQLite gets a fresh file in a temporary folder; PostgreSQL a scratch database dropped and created again (loopback
only), or an existing, already isolated database (a schema named by ``search_path``) left in place.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.scratch_db import check_loopback, postgres_version, recreate_postgres
from bench.serve import HieServe, hie_command

__all__ = ["Database", "Server", "hie_command", "load_average", "machine_lines", "server_env"]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_bench_suite"


def server_env(database_url: str, export_dir: Path, *, auth: bool = True) -> dict[str, str]:
    """Production settings for the subprocesses (``auth=False``: authentication off, for a tree without it)."""
    env = {**os.environ, "HIE_DATABASE_URL": database_url, "HIE_EXPORT_DIR": str(export_dir)}
    env.pop("HIE_AUTH_DISABLED", None)
    if not auth:
        env["HIE_AUTH_DISABLED"] = "true"
    return env


@dataclass
class Database:
    """One backend's database for a run."""

    backend: str  # "sqlite" or "postgresql"
    url: str
    recreate: bool = True

    @classmethod
    def sqlite(cls, folder: Path) -> Database:
        return cls("sqlite", f"sqlite:///{folder / 'hie.db'}")

    @classmethod
    def postgres(cls, url: str, *, recreate: bool = True) -> Database:
        check_loopback(url)
        return cls("postgresql", url, recreate)

    def prepare(self, export_dir: Path) -> None:
        """A fresh (or the given) database at the latest schema, through ``hie db upgrade``."""
        if self.backend == "postgresql" and self.recreate:
            recreate_postgres(self.url)
        done = subprocess.run(
            [hie_command(), "db", "upgrade"],
            env=server_env(self.url, export_dir),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`hie db upgrade` failed on {self.backend}:\n{done.stdout}\n{done.stderr}")

    def bench_token(self, export_dir: Path) -> str | None:
        """A token of a client registered for the benchmark (``hie auth client create`` then ``hie auth token``,
        scopes ``system/*.cruds``, acting for the exchange); None when this tree has no ``hie auth``."""
        env = server_env(self.url, export_dir)
        register = ["client", "create", "--name", "benchmark load generator", "--scope", "system/*.cruds", "--exchange"]
        created = subprocess.run(
            [hie_command(), "auth", *register],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        client_id = next(
            (line.split()[-1] for line in created.stdout.splitlines() if line.startswith("client_id:")), ""
        )
        if created.returncode != 0 or not client_id:
            return None
        issued = subprocess.run(
            [hie_command(), "auth", "token", "--client", client_id, "--lifetime", "86400"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = issued.stdout.split()
        if issued.returncode != 0 or not lines:
            raise RuntimeError(f"`hie auth token` failed on {self.backend}:\n{issued.stdout}\n{issued.stderr}")
        return lines[-1]

    def drop(self) -> None:
        if self.backend == "postgresql" and self.recreate:
            recreate_postgres(self.url, drop_only=True)

    def engine(self) -> Engine:
        return create_engine(self.url)

    def count(self) -> dict[str, int]:
        """Current (not deleted) resources per type."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT res_type, count(*) FROM resources WHERE NOT deleted GROUP BY res_type")
                ).all()
        finally:
            engine.dispose()
        return {t: n for t, n in rows}

    def footprint(self) -> dict[str, int]:
        """Bytes: ``total`` on disk; ``data`` = ``tables`` + ``indexes`` (pages in use) where the database tells;
        of that, ``bodies`` (the ``resource_versions`` table) and ``search`` (the ``idx_*`` tables with their
        indexes)."""
        if self.backend == "sqlite":
            path = Path(make_url(self.url).database or "")
            wal = path.with_name(path.name + "-wal")
            total = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
            sizes = {"total": total}
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                try:
                    rows = conn.execute(
                        "SELECT m.type, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                        "GROUP BY m.type"
                    ).fetchall()
                except sqlite3.OperationalError:
                    rows = []
                parts = (
                    conn.execute(
                        "SELECT sum(CASE WHEN s.name = 'resource_versions' THEN s.pgsize ELSE 0 END), "
                        "sum(CASE WHEN m.tbl_name LIKE 'idx!_%' ESCAPE '!' THEN s.pgsize ELSE 0 END) "
                        "FROM dbstat s JOIN sqlite_master m ON m.name = s.name"
                    ).fetchone()
                    if rows
                    else None
                )
            by_kind = dict(rows)
            if by_kind and parts:
                sizes["tables"] = int(by_kind.get("table", 0))
                sizes["indexes"] = int(by_kind.get("index", 0))
                sizes["data"] = sizes["tables"] + sizes["indexes"]
                sizes["bodies"], sizes["search"] = int(parts[0] or 0), int(parts[1] or 0)
            return sizes
        engine = self.engine()
        try:
            with engine.connect() as conn:
                tables, indexes, bodies, search = conn.execute(
                    text(
                        "SELECT coalesce(sum(pg_table_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0), "
                        "coalesce(sum(pg_table_size(c.oid)) FILTER (WHERE c.relname = 'resource_versions'), 0), "
                        "coalesce(sum(pg_table_size(c.oid) + pg_indexes_size(c.oid)) "
                        "FILTER (WHERE c.relname LIKE 'idx!_%' ESCAPE '!'), 0) "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
                    )
                ).one()
        finally:
            engine.dispose()
        data = int(tables) + int(indexes)
        return {
            "total": data,
            "data": data,
            "tables": int(tables),
            "indexes": int(indexes),
            "bodies": int(bodies),
            "search": int(search),
        }

    def describe(self) -> str:
        if self.backend == "sqlite":
            return f"SQLite {sqlite3.sqlite_version} (WAL)"
        return postgres_version(self.url)


class Server(HieServe):
    """``hie serve`` with several uvicorn workers on a scratch database, with production settings."""

    def __init__(self, database: Database, workers: int, log_path: Path, export_dir: Path, *, auth: bool) -> None:
        super().__init__(server_env(database.url, export_dir, auth=auth), workers, log_path)
        self.database = database
        self.auth = auth
        self.export_dir = export_dir

    def rss(self) -> tuple[int, int]:
        """(resident set size summed over the server's processes in bytes, number of processes)."""
        if self.process is None:
            return 0, 0
        total, count = 0, 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        count += 1
            except (OSError, ValueError):
                continue
        return total, count


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_lines() -> list[str]:
    """nproc, CPU model, memory, Python and OS: what the figures were measured on."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    return [
        f"- cores: {os.cpu_count()} ({model}), memory {memory}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()} "
        f"{platform.release()}",
    ]
