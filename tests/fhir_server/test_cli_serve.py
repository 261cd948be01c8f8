"""``hie serve``: what it hands to uvicorn."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from fhir_server.cli import app as hie


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The keyword arguments of each ``uvicorn.run`` the command made (none is started)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setenv("HIE_DATABASE_URL", f"sqlite:///{tmp_path / 'hie.db'}")
    monkeypatch.setattr("fhir_server.cli.uvicorn.run", lambda target, **kwargs: calls.append(kwargs))
    return calls


def test_no_access_log_by_default(served):
    result = CliRunner().invoke(hie, ["serve", "--port", "8123", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert served == [
        {
            "factory": True,
            "host": "127.0.0.1",
            "port": 8123,
            "workers": 2,
            "log_level": "info",
            "access_log": False,
        }
    ]


def test_access_log_on_request(served):
    result = CliRunner().invoke(hie, ["serve", "--access-log"])
    assert result.exit_code == 0, result.output
    assert served[0]["access_log"] is True


def test_an_unknown_option_is_refused(served):
    result = CliRunner().invoke(hie, ["serve", "--access-logs"])
    assert result.exit_code != 0
    assert "No such option" in result.output
    assert served == []
