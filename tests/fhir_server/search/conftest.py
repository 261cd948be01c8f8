"""Fixtures of the search tests: the application with the search routes, in-process and on a real port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fhir_server.api import search
from fhir_server.api.app import create_app
from tests.conftest import Backend, _free_port


def search_app(backend: Backend) -> FastAPI:
    """``create_app`` with the search routes ahead of the interaction routes."""
    app = create_app(backend.settings, backend.engine)
    if not any(getattr(route, "name", "") == "search_type" for route in app.router.routes):
        app.router.routes[:0] = search.router(app.state.context).routes
    return app


@pytest.fixture(scope="module")
def search_client(backend: Backend) -> Iterator[TestClient]:
    with TestClient(search_app(backend), base_url="http://testserver") as client:
        yield client


class SearchServer:
    """The search-enabled application on a real socket, in a background thread."""

    def __init__(self, backend: Backend) -> None:
        self.port = _free_port()
        config = uvicorn.Config(search_app(backend), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start within 20 s")
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def search_server(backend: Backend) -> Iterator[SearchServer]:
    server = SearchServer(backend)
    yield server
    server.stop()
