"""A set kept for one transaction: empty again in the next, refused before a transaction has begun."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_server.config import Settings
from fhir_server.storage.engine import create_db_engine, transaction_set, unit_of_work


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_db_engine(Settings(database_url=f"sqlite:///{tmp_path / 'hie.db'}"))
    yield engine
    engine.dispose()


def test_a_set_lives_for_one_transaction(engine) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        conn.execute(text("SELECT 1"))
        transaction_set(conn, "noted").add("first")
        assert transaction_set(conn, "noted") == {"first"}
    with unit_of_work(engine, write=False) as conn:
        conn.execute(text("SELECT 1"))
        assert transaction_set(conn, "noted") == set()


def test_a_set_before_the_first_statement_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        with pytest.raises(RuntimeError, match="outside a transaction"):
            transaction_set(conn, "noted")
        conn.execute(text("SELECT 1"))
        assert transaction_set(conn, "noted") == set()
