"""`hie demo load`: the demo set goes through the REST API's service (regional checks, MPI) and loads once."""

from __future__ import annotations

from sqlalchemy import func, select

from fhir_server.api.app import Context
from fhir_server.demo import load_demo
from fhir_server.storage.tables import resources


def test_demo_load_is_idempotent_and_files_every_resident_with_the_mpi(backend) -> None:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(update={"mpi_enabled": True})
    service = Context(settings, backend.engine).service

    assert load_demo(backend.engine, service) == 23
    assert load_demo(backend.engine, service) == 0

    with backend.engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(resources.c.res_type, func.count())
                .where(resources.c.deleted.is_(False))
                .group_by(resources.c.res_type)
            ).all()
        )
        patients = [
            service.read(conn, "Patient", res_id).resource()
            for (res_id,) in conn.execute(
                select(resources.c.res_id).where(resources.c.res_type == "Patient", resources.c.deleted.is_(False))
            )
        ]
    assert counts == {"Organization": 3, "Patient": 10, "Observation": 15}
    sources = [p for p in patients if not any(t.get("code") == "golden-record" for t in p["meta"].get("tag", []))]
    assert len(sources) == 5
    assert all([link["type"] for link in p["link"]] == ["refer"] for p in sources)
