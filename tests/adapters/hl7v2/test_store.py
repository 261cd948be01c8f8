"""The received-message table on both backends: idempotency key, dead letters, replay marks, the migration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from adapters.hl7v2 import store
from adapters.hl7v2.parse import parse_message
from fhir_server.config import Settings
from fhir_server.migrations import downgrade, upgrade
from fhir_server.storage import create_db_engine, unit_of_work
from tests.adapters.hl7v2.samples import message_bytes
from tests.conftest import POSTGRES_URL


def _key(control_id: str | None = None, facility: str | None = "450400-001") -> store.MessageKey:
    return store.MessageKey(facility, control_id or uuid.uuid4().hex, "ADT^A01", "utf-8", "d" * 64)


def test_dead_letter_keeps_raw_bytes_and_reason(engine) -> None:
    key = _key()
    raw = message_bytes("adt_a04_gb18030.hl7")
    with unit_of_work(engine) as conn:
        message_id = store.record_dead(conn, key, raw, reason="PID-8: bad sex", ack_code="AE", error_location="PID-8")

    with unit_of_work(engine, write=False) as conn:
        found = store.find_message(conn, sending_facility="450400-001", control_id=key.control_id)
        listed = store.dead_letters(conn)

    assert found is not None
    assert found.id == message_id
    assert (found.status, found.raw, found.reason, found.ack_code, found.error_location, found.attempts) == (
        store.DEAD,
        raw,
        "PID-8: bad sex",
        "AE",
        "PID-8",
        1,
    )
    assert message_id in [letter.id for letter in listed]
    assert found.applied is None


def test_text_decodes_in_the_stored_charset() -> None:
    raw = message_bytes("adt_a04_gb18030.hl7")
    header = parse_message(raw).header
    key = store.MessageKey.for_header(header, None)
    message = store.ReceivedMessage(
        id=1,
        sending_facility=key.sending_facility,
        control_id=key.control_id,
        message_type=key.message_type,
        received_at=0,
        status=store.DEAD,
        raw=raw,
        charset=key.charset,
        digest=None,
        reason=None,
        ack_code="AE",
        error_location=None,
        response=None,
        applied_at=None,
        attempts=1,
    )

    assert key.charset == "gb18030"
    assert "梁^桂芳" in message.text()


def test_the_key_is_unique(engine) -> None:
    key = _key()
    with unit_of_work(engine) as conn:
        store.record_applied(conn, key, b"MSH|1", response="[]")

    with pytest.raises(IntegrityError), unit_of_work(engine) as conn:
        store.record_applied(conn, key, b"MSH|2", response="[]")


def test_unreadable_messages_are_kept_without_a_key(engine) -> None:
    key = store.MessageKey.for_header(None, "e" * 64)
    with unit_of_work(engine) as conn:
        first = store.record_dead(conn, key, b"garbage 1", reason="no MSH", ack_code="AE", error_location="MSH")
        second = store.record_dead(conn, key, b"garbage 2", reason="no MSH", ack_code="AE", error_location="MSH")

    assert first != second


def test_a_repeated_dead_letter_is_updated_in_place(engine) -> None:
    key = _key()
    with unit_of_work(engine) as conn:
        message_id = store.record_dead(conn, key, b"MSH|v1", reason="first", ack_code="AE", error_location="")
        previous = store.get_message(conn, message_id)
        again = store.record_dead(
            conn, key, b"MSH|v2", reason="second", ack_code="AR", error_location="MSH-9", previous=previous
        )
        stored = store.get_message(conn, message_id)

    assert again == message_id
    assert stored is not None
    assert (stored.raw, stored.reason, stored.ack_code, stored.attempts) == (b"MSH|v2", "second", "AR", 2)


def test_mark_replayed_turns_a_dead_letter_applied_once(engine) -> None:
    key = _key()
    with unit_of_work(engine) as conn:
        message_id = store.record_dead(conn, key, b"MSH|x", reason="why", ack_code="AE", error_location="")
        store.mark_replayed(conn, message_id, raw=b"MSH|x", digest=key.digest, response='[{"status": "200 OK"}]')
        stored = store.get_message(conn, message_id)

    assert stored is not None
    assert (stored.status, stored.ack_code, stored.attempts) == (store.APPLIED, "AA", 2)
    assert stored.applied is not None
    assert stored.reason == "why"
    with pytest.raises(store.StaleDeadLetterError), unit_of_work(engine) as conn:
        store.mark_replayed(conn, message_id, raw=b"MSH|x", digest=key.digest, response="[]")


@pytest.fixture
def scratch_engine(backend, tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """An empty database of the backend's kind, for migrating step by step."""
    if backend.name == "sqlite":
        engine = create_db_engine(Settings(database_url=f"sqlite:///{tmp_path / 'steps.db'}"))
        yield engine
        engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_db_engine(Settings(database_url=url.render_as_string(hide_password=False)))
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_migration_0003_creates_and_drops_the_table(scratch_engine: Engine) -> None:
    upgrade(scratch_engine, "0003")
    assert inspect(scratch_engine).has_table("hl7_messages")
    assert [c["name"] for c in inspect(scratch_engine).get_unique_constraints("hl7_messages")] == [
        "uq_hl7_messages_key"
    ]
    assert {c.name for c in store.hl7_messages.columns} == {
        c["name"] for c in inspect(scratch_engine).get_columns("hl7_messages")
    }

    downgrade(scratch_engine, "0002")
    assert not inspect(scratch_engine).has_table("hl7_messages")
