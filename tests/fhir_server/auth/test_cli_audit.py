"""``hie`` commands that write resources or register clients leave an AuditEvent of the CLI, on both backends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fhir_server.access.inprocess import CLI_AGENT
from fhir_server.audit import verify
from fhir_server.cli import app as hie
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import audit_log


@pytest.fixture
def run(backend, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    monkeypatch.setenv("HIE_MPI_GOLDEN_REBUILD", "inline")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        result = runner.invoke(hie, list(args))
        assert result.exit_code == 0, result.output
        return result

    return invoke


def _cli_events(engine) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(select(audit_log.c.event).where(audit_log.c.client_id == CLI_AGENT)).scalars()
        return [orjson.loads(row) for row in rows]


def test_demo_load_is_audited_with_what_it_wrote(run, engine) -> None:
    before = len(_cli_events(engine))
    run("demo", "load")
    events = _cli_events(engine)
    assert len(events) == before + 1
    event = events[-1]
    assert event["outcome"] == "0"
    assert event["subtype"][1]["code"].endswith(" demo load")  # the full command path
    written = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "4"]
    residents = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "1"]
    assert any(ref.startswith("Observation/") for ref in written)
    assert residents
    agents = [a["who"].get("identifier", {}).get("value") for a in event["agent"]]
    assert CLI_AGENT in agents

    run("demo", "load")  # loads nothing the second time: nothing written, no event
    assert len(_cli_events(engine)) == before + 1


def test_registering_a_client_is_audited(run, engine) -> None:
    created = run(
        "auth",
        "client",
        "create",
        "--name",
        "HIS",
        "--scope",
        "system/*.rs",
        "--organization",
        "Organization/cli-audit",
    )
    client_id = next(line.split(": ", 1)[1] for line in created.output.splitlines() if line.startswith("client_id"))
    event = _cli_events(engine)[-1]
    assert f"client={client_id} organization=Organization/cli-audit" in event["outcomeDesc"]
    assert "auth client create" in event["outcomeDesc"]
    assert "entity" not in event

    assert event["subtype"][1]["code"].endswith(" auth client create")  # named once, not twice
    assert "create client create" not in event["outcomeDesc"]

    run("auth", "client", "deactivate", client_id)
    assert f"auth client deactivate client={client_id}" in _cli_events(engine)[-1]["outcomeDesc"]


def test_commands_that_write_nothing_leave_no_event(run, engine) -> None:
    before = len(_cli_events(engine))
    run("auth", "client", "list")
    assert len(_cli_events(engine)) == before


def test_the_chain_verifies_after_cli_events(run, engine) -> None:
    run("auth", "client", "create", "--name", "HIS 2", "--scope", "system/*.rs")
    checked, _, broken = verify(engine)
    assert broken is None and checked > 0


def test_large_work_lists_its_first_resources_and_counts_the_rest(backend, engine, monkeypatch) -> None:
    from fhir_server.access import inprocess
    from fhir_server.api.app import Context

    monkeypatch.setattr(inprocess, "MAX_LISTED", 2)
    service = Context(backend.settings, engine).service
    work = inprocess.audited_work(CLI_AGENT, interaction="operation", method="CLI", path="hie test", flush=True)
    with work, unit_of_work(engine) as conn:
        for _ in range(3):
            service.create(conn, {"resourceType": "Observation", "status": "final", "code": {"text": "血压"}})
    event = _cli_events(engine)[-1]
    assert event["outcomeDesc"] == "200 CLI hie test (and 1 more versions written)"
    assert len([e for e in event["entity"] if e["role"]["code"] == "4"]) == 2
