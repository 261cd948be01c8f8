"""The audit of a ``hie`` command names its full path (``hie mpi rebuild``, not ``hie mpi``)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from typer.testing import CliRunner

from fhir_server.access import inprocess
from fhir_server.cli import app


@pytest.fixture
def audited(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the CLI opens audited work for (the work itself is not run)."""
    paths: list[str] = []

    def capture(*_args: Any, **named: Any) -> contextlib.nullcontext[None]:
        paths.append(named["path"])
        return contextlib.nullcontext()

    monkeypatch.setattr(inprocess, "audited_work", capture)
    monkeypatch.setenv("HIE_DATABASE_URL", "sqlite:///:memory:")
    return paths


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["mpi", "rebuild", "--help"], "mpi rebuild"),
        (["auth", "client", "list", "--help"], "auth client list"),
        (["db", "reindex", "--type", "Patient", "--help"], "db reindex"),
        (["demo", "load", "--help"], "demo load"),
    ],
)
def test_the_event_names_every_level_of_the_command(audited: list[str], args: list[str], path: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [named] = audited
    assert named.split(" ", 1)[1] == path


def test_serving_commands_are_not_audited_as_commands(audited: list[str]) -> None:
    assert CliRunner().invoke(app, ["worker", "--help"]).exit_code == 0
    assert audited == []
