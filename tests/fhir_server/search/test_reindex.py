"""``reindex_database`` rebuilds lost or outdated index rows, batch by batch, on both backends."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from fhir_server.search.parameters import default_registry
from fhir_server.search.reindex import reindex_database
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import INDEX_TABLES


def test_reindex_rebuilds_every_index_row(client, engine):
    for family in ("黄", "Huang", "Wong"):
        client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
    client.post("/fhir/Location", json={"resourceType": "Location", "position": {"latitude": 1, "longitude": 2}})
    with unit_of_work(engine, write=False) as conn:
        before = {k: conn.execute(select(func.count()).select_from(t)).scalar_one() for k, t in INDEX_TABLES.items()}
    with unit_of_work(engine) as conn:
        for table in INDEX_TABLES.values():
            conn.execute(delete(table))
    assert client.get("/fhir/Patient", params={"name-pinyin": "huang"}).json()["total"] == 0
    progress: list[tuple[int, int]] = []
    count = reindex_database(engine, default_registry(), progress=lambda done, total: progress.append((done, total)))
    assert count == 4 and progress[-1] == (4, 4)
    with unit_of_work(engine, write=False) as conn:
        after = {k: conn.execute(select(func.count()).select_from(t)).scalar_one() for k, t in INDEX_TABLES.items()}
    assert after == before
    assert client.get("/fhir/Patient", params={"name-pinyin": "huang"}).json()["total"] == 1
    assert client.get("/fhir/Patient", params={"family": "huang"}).json()["total"] == 1
    assert reindex_database(engine, default_registry(), "Location") == 1
