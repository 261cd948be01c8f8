"""Lost PostgreSQL connections: pooled connections whose server backend is gone (a restart, an idle-session kill).

The pool hands connections out without a ``SELECT 1`` first; the statement that finds a connection dead fails,
SQLAlchemy invalidates it and every connection the pool made before it, reads are retried on a new connection, and
writes get a clear error with nothing of them stored. The backends are ended with ``pg_terminate_backend`` from
another connection, as a restart or an administrator would end them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from fhir_server.api.app import Context, create_app
from fhir_server.errors import FhirError
from fhir_server.storage import create_db_engine, unit_of_work
from fhir_server.storage.engine import connection_lost
from tests.conftest import POSTGRES_URL, Backend, auth_headers

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "valueQuantity": {"value": 128, "unit": "mm[Hg]"},
}


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    db = Backend("postgres", tmp_path_factory.mktemp("postgres"))
    yield db
    db.close()


@pytest.fixture
def tagged(postgres: Backend) -> Iterator[tuple[Engine, str]]:
    """An engine of the server's own kind whose connections carry a name of their own (ended by that name only)."""
    name = f"hie_disconnect_{uuid.uuid4().hex[:12]}"
    url = make_url(postgres.url).update_query_dict({"application_name": name})
    settings = postgres.settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
    engine = create_db_engine(settings)
    yield engine, name
    engine.dispose()


def terminate_backends(application_name: str) -> int:
    """End the server backends of every connection named ``application_name``; how many there were."""
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application_name},
            ).all()
    finally:
        admin.dispose()
    return len(ended)


def pooled_connections(engine: Engine, count: int) -> set[int]:
    """Open ``count`` connections at once and give them back to the pool; their server backends' pids."""
    connections = [engine.connect() for _ in range(count)]
    pids = {conn.execute(text("SELECT pg_backend_pid()")).scalar_one() for conn in connections}
    for conn in connections:
        conn.close()
    return pids


def backend_pid(conn: Connection) -> int:
    return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_after_the_backends_are_ended_one_unit_of_work_fails_and_the_pool_renews_itself(tagged):
    engine, name = tagged
    old = pooled_connections(engine, 3)
    assert terminate_backends(name) == 3
    with pytest.raises(Exception) as failed, unit_of_work(engine, write=False) as conn:
        backend_pid(conn)
    assert connection_lost(failed.value)
    # Every connection made before the failure was invalidated with it: all three now reach live backends.
    renewed = pooled_connections(engine, 3)
    assert len(renewed) == 3
    assert not renewed & old


def test_a_read_after_the_backends_are_ended_is_retried_and_answers(tagged, postgres):
    engine, name = tagged
    context = Context(postgres.settings, engine)
    with unit_of_work(engine) as conn:
        stored = context.service.create(conn, dict(OBSERVATION)).version
    pooled_connections(engine, 2)
    assert terminate_backends(name) == 2

    def read(conn: Connection):  # type: ignore[no-untyped-def]
        return context.service.read(conn, "Observation", stored.res_id)

    found = asyncio.run(context.run(read, write=False, bounded=True))
    assert found.res_id == stored.res_id
    assert found.version == stored.version


def test_a_write_after_the_backends_are_ended_gets_a_clear_error_and_stores_nothing(tagged, postgres):
    engine, name = tagged
    context = Context(postgres.settings, engine)
    before = count_observations(engine)
    pooled_connections(engine, 2)
    assert terminate_backends(name) == 2

    def create(conn: Connection):  # type: ignore[no-untyped-def]
        return context.service.create(conn, dict(OBSERVATION))

    with pytest.raises(FhirError) as refused:
        asyncio.run(context.run(create))
    assert refused.value.kind == "transient"
    assert "nothing was stored" in refused.value.diagnostics
    assert refused.value.headers == {"Retry-After": "1"}
    assert count_observations(engine) == before
    asyncio.run(context.run(create))  # the pool was renewed: the client's retry is stored
    assert count_observations(engine) == before + 1


def test_a_connection_lost_during_commit_is_reported_in_doubt_and_leaves_no_partial_write(tagged, postgres):
    engine, name = tagged
    context = Context(postgres.settings, engine)
    before = count_observations(engine)

    def create_then_lose_the_connection(conn: Connection):  # type: ignore[no-untyped-def]
        outcome = context.service.create(conn, dict(OBSERVATION))
        assert terminate_backends(name) == 1  # this unit's own backend, after its statements, before COMMIT
        return outcome

    with pytest.raises(FhirError) as failed:
        asyncio.run(context.run(create_then_lose_the_connection))
    assert failed.value.kind == "exception"
    assert "may or may not have been stored" in failed.value.diagnostics
    assert count_observations(engine) == before  # the server rolled the unfinished transaction back, all of it
    assert count_rows(engine, "resource_versions") == count_rows(engine, "resources")


def test_the_rest_api_answers_reads_and_writes_cleanly_after_the_backends_are_ended(
    postgres: Backend,
):
    name = f"hie_disconnect_{uuid.uuid4().hex[:12]}"
    url = make_url(postgres.url).update_query_dict({"application_name": name})
    # The audit writer and the background dispatcher off: their threads would otherwise be the ones to find the
    # connections dead, at random, and renew the pool before the request does.
    update = {
        "database_url": url.render_as_string(hide_password=False),
        "audit_enabled": False,
        "background": "off",
    }
    settings = postgres.settings.model_copy(update=update)
    engine = create_db_engine(settings)
    headers = auth_headers(postgres)
    try:
        with TestClient(create_app(settings, engine), headers=headers) as client:
            created = client.post(
                "/fhir/Observation",
                content=orjson.dumps(OBSERVATION),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert created.status_code == 201
            location = f"/fhir/Observation/{created.json()['id']}"
            assert client.get(location).status_code == 200
            stored = count_observations(engine)
            assert terminate_backends(name) >= 1

            read = client.get(location)
            assert read.status_code == 200
            assert read.json()["id"] == created.json()["id"]

            assert terminate_backends(name) >= 1
            written = client.post(
                "/fhir/Observation",
                content=orjson.dumps(OBSERVATION),
                headers={"Content-Type": "application/fhir+json"},
            )
            # Refused, or stored when its connection's checkout changed the session's statement timeout (a read by
            # id had it last) and so found the backend gone first: never a 500, never half a write.
            if written.status_code == 503:
                assert written.headers["Retry-After"] == "1"
                outcome = written.json()
                assert outcome["resourceType"] == "OperationOutcome"
                assert "nothing was stored" in outcome["issue"][0]["diagnostics"]
            else:
                assert written.status_code == 201
                stored += 1
                assert client.get(f"/fhir/Observation/{written.json()['id']}").status_code == 200
            searched = client.get("/fhir/Observation", params={"code": "http://loinc.org|8480-6", "_total": "accurate"})
            assert searched.status_code == 200
            assert searched.json()["total"] == stored == count_observations(engine)
    finally:
        engine.dispose()


def count_observations(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'Observation'")).scalar_one()


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_checkout_that_changes_the_statement_timeout_replaces_a_lost_connection(tagged):
    engine, name = tagged
    with unit_of_work(engine, write=False, statement_timeout_ms=200) as conn:  # the session keeps 200 ms
        lost = backend_pid(conn)
    assert terminate_backends(name) == 1
    with unit_of_work(engine) as conn:  # its checkout resets the timeout, finds the backend gone, takes a new one
        assert backend_pid(conn) != lost
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
