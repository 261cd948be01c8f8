"""A setting with a value the exchange does not know stops start-up with a message naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fhir_server.config import Settings


def test_an_unknown_golden_rebuild_mode_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIE_MPI_GOLDEN_REBUILD", "later")
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "mpi_golden_rebuild" in message
    assert "'background', 'after-commit', 'inline' or 'queued'" in message


@pytest.mark.parametrize("mode", ["background", "after-commit", "inline", "queued"])
def test_each_golden_rebuild_mode_is_accepted(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("HIE_MPI_GOLDEN_REBUILD", mode)
    assert Settings().mpi_golden_rebuild == mode
