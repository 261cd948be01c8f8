"""``hie mllp`` and ``hie hl7 dead-letters | show | replay`` through the main ``hie`` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.hl7v2.apply import receive_message
from adapters.hl7v2.message import Hl7Message
from adapters.hl7v2.mllp import MllpDecoder, frame
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import map_message
from ehr_archive.mpi import install_mpi
from fhir_server.api.app import patient_identifier_check
from fhir_server.cli import app
from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.service import FhirService
from fhir_server.storage import create_db_engine
from tests.adapters.hl7v2.samples import wire_variant


@pytest.fixture
def hie(backend, monkeypatch):  # type: ignore[no-untyped-def]
    """Run ``hie ARGS`` in-process against the test database."""
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


@pytest.fixture
def dead_merge(engine) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """A dead letter: an A40 merging a prior patient the archive does not know."""
    control_id = f"CLI-{uuid.uuid4().hex[:8]}"
    service = FhirService(checks=[patient_identifier_check])
    install_mpi(service)
    outcome = receive_message(engine, service, wire_variant("adt_a40.hl7", control_id))
    assert outcome.message_id is not None
    return outcome.message_id, control_id


def test_dead_letters_lists_id_received_facility_control_id_type_and_reason(hie, dead_merge) -> None:
    message_id, control_id = dead_merge

    result = hie("hl7", "dead-letters")

    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if control_id in line)
    for column in (str(message_id), "450400-001", "ADT^A40", "MRG-1: the prior patient"):
        assert column in row
    assert "received" in result.output


def test_show_prints_the_record_and_the_segments(hie, dead_merge) -> None:
    message_id, control_id = dead_merge

    result = hie("hl7", "show", str(message_id))

    assert result.exit_code == 0, result.output
    assert f"id {message_id}: dead, ACK AE" in result.output
    assert "reason: MRG-1: the prior patient" in result.output
    assert f"ADT^A40^ADT_A39|{control_id}|" in result.output
    assert "\nPID|1||" in result.output


def test_replay_prints_the_ack_code(hie, dead_merge, monkeypatch) -> None:
    message_id, _ = dead_merge
    failed = hie("hl7", "replay", str(message_id))
    assert failed.exit_code == 1
    assert failed.output.startswith(f"AE: message {message_id} is still a dead letter")

    def without_merge(message: Hl7Message, **kwargs: Any) -> dict[str, Any]:
        bundle = map_message(message, **kwargs)
        bundle["entry"] = [e for e in bundle["entry"] if "$merge" not in e["request"]["url"]]
        return bundle

    monkeypatch.setattr("adapters.hl7v2.apply.map_message", without_merge)
    applied = hie("hl7", "replay", str(message_id))

    assert applied.exit_code == 0, applied.output
    assert applied.output.strip() == f"AA: message {message_id} applied."
    assert str(message_id) not in [line.split()[1] for line in _rows(hie("hl7", "dead-letters").output)]
    again = hie("hl7", "replay", str(message_id))
    assert again.exit_code == 1
    assert "not a dead letter" in again.output


def test_replay_and_show_of_an_unknown_id(hie) -> None:
    for command in ("replay", "show"):
        result = hie("hl7", command, "999999999")
        assert result.exit_code == 1
        assert "no HL7 message 999999999" in result.output


def test_mllp_refuses_a_database_without_the_table(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HIE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")

    result = CliRunner().invoke(app, ["mllp", "--port", "0"])

    assert result.exit_code == 1
    assert "hie db upgrade" in result.output


def test_mllp_command_listens_and_acknowledges(tmp_path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hie.db'}")
    upgrade(create_db_engine(settings))
    env = {**os.environ, "HIE_DATABASE_URL": settings.database_url}
    command = [sys.executable, "-c", "from fhir_server.cli import app; app()", "mllp", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("MLLP listener: 127.0.0.1:"), line
        port = int(line.split()[2].rsplit(":", 1)[1])
        control_id = f"CMD-{uuid.uuid4().hex[:8]}"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(frame(wire_variant("adt_a28.hl7", control_id)))
            decoder = MllpDecoder()
            acks: list[bytes] = []
            while not acks:
                decoder.feed(sock.recv(65536))
                acks.extend(decoder)
        msa = parse_message(acks[0]).require("MSA")
        assert (msa.value(1), msa.value(2)) == ("AA", control_id)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│")]
