"""Shared fixtures: both storage backends, an app client, a live server; loud about missing services."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from fhir_server.access.inprocess import close_in_process_audit, configure_in_process_audit
from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.storage import create_db_engine

POSTGRES_URL = os.environ.get("HIE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("HIE_REQUIRE_SERVICES") == "1"
_missing_services: dict[str, str] = {}


def service_answers(url: str) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (or fail, with HIE_REQUIRE_SERVICES=1) when a service the test needs does not answer."""
    if service_answers(url):
        return
    message = f"{name} does not answer at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (HIE_REQUIRE_SERVICES=1 makes this a failure)")
    _missing_services[name] = message
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    for name, message in _missing_services.items():
        terminalreporter.write_line(
            f"!!! SKIPPED TESTS: {message}; start {name} or set HIE_REQUIRE_SERVICES=1 to fail instead", red=True
        )


def corpus_dir() -> Path:
    """The shared test corpus; skipped with a clear reason when HIE_CORPUS_DIR is not set."""
    value = os.environ.get("HIE_CORPUS_DIR")
    if not value or not Path(value).is_dir():
        if REQUIRE_SERVICES:
            pytest.fail("HIE_CORPUS_DIR must point at the shared corpus when HIE_REQUIRE_SERVICES=1")
        pytest.skip("HIE_CORPUS_DIR is not set; corpus tests need the shared corpus")
    return Path(value)


class Backend:
    """A fresh, migrated database: a SQLite file or a private PostgreSQL schema."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self._schema: str | None = None
        self.tokens: dict[tuple[str, str | None, bool], str] = {}
        """Access tokens of clients registered in this database, by (scope, organization, exchange)."""
        if name == "sqlite":
            self.url = f"sqlite:///{tmp / 'hie.db'}"
            self.settings = Settings(database_url=self.url)
            self.engine = create_db_engine(self.settings)
        else:
            require_service("PostgreSQL", POSTGRES_URL)
            self._schema = f"t_{uuid.uuid4().hex[:12]}"
            admin = create_engine(POSTGRES_URL)
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {self._schema}"))
            admin.dispose()
            url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={self._schema}"})
            self.url = url.render_as_string(hide_password=False)
            self.settings = Settings(database_url=self.url)
            self.engine = create_db_engine(self.settings)
        # The MPI adds a golden Patient per resident; suites that count Patients run without it
        # (tests/ehr_archive turn it on with settings.model_copy(update={"mpi_enabled": True})).
        # When it is on, goldens are rebuilt right after each commit, before the request returns (docs/MPI.md).
        # Audit spool files go to the test's own folder, not under the working directory's var/ (in-process
        # work's too: HL7 messages applied, background runs).
        self.settings = self.settings.model_copy(
            update={"mpi_enabled": False, "mpi_golden_rebuild": "after-commit", "audit_spool_dir": tmp / "audit-spool"}
        )
        configure_in_process_audit(self.engine, self.settings)
        upgrade(self.engine)

    def close(self) -> None:
        close_in_process_audit(self.engine)  # its events written and its spool released while the database lives
        self.engine.dispose()
        if self._schema:
            admin = create_engine(POSTGRES_URL)
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {self._schema} CASCADE"))
            admin.dispose()


@contextmanager
def database_at(backend: str, revision: str, folder: Path) -> Iterator[Engine]:
    """A fresh database migrated only up to ``revision`` (migration tests): a SQLite file in ``folder`` or a private
    PostgreSQL schema, dropped afterwards."""
    if backend == "sqlite":
        engine = create_engine(f"sqlite:///{folder / 'old.db'}")
        upgrade(engine, revision)
        yield engine
        engine.dispose()
        return
    require_service("PostgreSQL", POSTGRES_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"}))
    try:
        upgrade(engine, revision)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    db = Backend(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    db.close()


@pytest.fixture(scope="module")
def engine(backend: Backend) -> Engine:
    return backend.engine


def token_for(
    backend: Backend, scope: str = "system/*.*", *, organization: str | None = None, exchange: bool | None = None
) -> str:
    """An access token of a client registered in this backend's database (one client per distinct request).

    The default is the suite's all-access client: ``system/*.*`` acting for the exchange itself, so neither
    scopes nor institution filters restrict it. Tokens live a day, longer than any test module.
    """
    from fhir_server.auth.cli import create_client, issue_token

    if exchange is None:
        exchange = scope == "system/*.*" and organization is None
    key = (scope, organization, exchange)
    tokens = backend.tokens
    if key not in tokens:
        client, _ = create_client(
            backend.engine, name="test suite", scopes=scope, organization=organization, exchange=exchange
        )
        tokens[key] = issue_token(backend.engine, backend.settings, client.client_id, scope, lifetime=86_400)[0]
    return tokens[key]


def auth_headers(backend: Backend, scope: str = "system/*.*", **client: object) -> dict[str, str]:
    """``Authorization: Bearer …`` for clients of tests that build their own TestClient, httpx or FHIR client."""
    return {"Authorization": f"Bearer {token_for(backend, scope, **client)}"}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(backend: Backend):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    app = create_app(backend.settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``hie serve``'s application on a real socket, in a background thread."""

    def __init__(self, settings: Settings, engine: Engine, headers: dict[str, str] | None = None) -> None:
        self.headers = headers or {}
        """``Authorization`` of the suite's all-access client: pass it to every client of this server."""
        self.http = httpx.Client(headers=self.headers)
        """An httpx client (thread-safe) that sends those headers: ``live_server.http.get(url)``."""
        self.port = _free_port()
        config = uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=self.port, log_level="warning")
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
        self.http.close()


@pytest.fixture(scope="module")
def live_server(backend: Backend) -> Iterator[LiveServer]:
    server = LiveServer(backend.settings, backend.engine, auth_headers(backend))
    yield server
    server.stop()
