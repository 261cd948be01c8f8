"""Migration 0015 rewrites every stored body as a Zstandard frame, and its downgrade restores the old forms."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import Engine, text

from fhir_server.migrations import downgrade, upgrade
from fhir_server.storage.codec import decode_body
from tests.conftest import database_at

ZSTD = b"\x28\xb5\x2f\xfd"


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request, tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """A fresh database at revision 0014 (bodies plain, zlib from 2 kB)."""
    with database_at(request.param, "0014", tmp_path) as engine:
        yield engine


def _bodies(engine: Engine) -> dict[tuple[int, int], bytes | None]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT res_pk, version, body FROM resource_versions")).all()
    return {(pk, version): None if body is None else bytes(body) for pk, version, body in rows}


def test_every_body_is_compressed_and_the_downgrade_restores_the_old_forms(old_database) -> None:
    engine = old_database
    small = orjson.dumps({"resourceType": "Patient", "id": "p", "name": [{"family": "黄"}]})
    large = orjson.dumps({"resourceType": "Observation", "id": "o", "note": [{"text": "血压偏高。" * 300}]})
    old = {(1, 1): small, (1, 2): None, (2, 1): zlib.compress(large, 1)}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO resources (res_pk, res_type, res_id, version, ts, deleted) VALUES "
                "(1, 'Patient', 'p', 2, 2, true), (2, 'Observation', 'o', 1, 1, false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO resource_versions (res_pk, version, res_type, ts, method, body) "
                "VALUES (:pk, :version, :type, :version, :method, :body)"
            ),
            [
                {"pk": pk, "version": v, "type": "Patient" if pk == 1 else "Observation", "method": "PUT", "body": b}
                for (pk, v), b in old.items()
            ],
        )
    upgrade(engine, "0015")
    new = _bodies(engine)
    assert new[(1, 2)] is None
    assert new[(1, 1)].startswith(ZSTD) and decode_body(new[(1, 1)]) == small
    assert new[(2, 1)].startswith(ZSTD) and decode_body(new[(2, 1)]) == large
    upgrade(engine, "0015")  # already converted: nothing changes
    assert _bodies(engine) == new
    downgrade(engine, "0014")
    assert _bodies(engine) == old
