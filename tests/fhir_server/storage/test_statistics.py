"""``refresh_statistics`` leaves the planner statistics behind on both backends (it ran in a rolled-back transaction
on SQLite once, so a bulk-loaded archive was planned without them)."""

from __future__ import annotations

from sqlalchemy import Engine

from fhir_server.storage.engine import is_postgres, refresh_statistics, unit_of_work


def test_statistics_survive_the_refresh(engine: Engine) -> None:
    with unit_of_work(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE stat_probe (a INTEGER)")
        conn.exec_driver_sql("CREATE INDEX ix_stat_probe ON stat_probe (a)")
        conn.exec_driver_sql("INSERT INTO stat_probe VALUES (1), (2), (3)")
    refresh_statistics(engine)
    with unit_of_work(engine, write=False) as conn:
        if is_postgres(conn):  # the archive's own tables: resources has been analysed
            analysed = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'resources' AND last_analyze IS NOT NULL"
            ).scalar_one()
        else:
            analysed = conn.exec_driver_sql("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'stat_probe'").scalar_one()
    assert analysed >= 1
