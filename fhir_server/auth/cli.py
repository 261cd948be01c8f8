"""``hie auth …``: register clients, print tokens for scripts, and the demo client of ``make run``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from sqlalchemy import Engine

from fhir_server.access.inprocess import note_command
from fhir_server.auth.authority import Authority
from fhir_server.auth.clients import Client, RegistryError, find_clients, get_client, register_client, set_active
from fhir_server.auth.scopes import ScopeError, granted_scopes, split_scopes
from fhir_server.config import Settings, load_settings
from fhir_server.storage.engine import unit_of_work

auth_app = typer.Typer(help="Clients of the token endpoint and access tokens", no_args_is_help=True)
client_app = typer.Typer(help="Registered clients (SMART Backend Services)", no_args_is_help=True)
auth_app.add_typer(client_app, name="client")

DEMO_CLIENT_NAME = "demo client"
DEMO_SCOPES = "system/*.cruds"


def issue_token(
    engine: Engine, settings: Settings, client_id: str, scopes: str | None = None, *, lifetime: int | None = None
) -> tuple[str, list[str]]:
    """An access token for a registered client, as the token endpoint would grant it (no client authentication)."""
    with unit_of_work(engine, write=False) as conn:
        client = get_client(conn, client_id)
    if client is None or not client.active:
        raise RegistryError(f"Client '{client_id}' is not registered or not active.")
    try:
        granted = granted_scopes(split_scopes(scopes), list(client.scopes), patient_context=client.patient is not None)
    except ScopeError as error:
        raise RegistryError(str(error)) from None
    if not granted:
        raise RegistryError(f"None of the scopes '{scopes}' is registered for client '{client_id}'.")
    return Authority(settings, engine).issue(client, granted, lifetime), granted


def create_client(
    engine: Engine,
    *,
    name: str,
    scopes: str,
    organization: str | None = None,
    exchange: bool = False,
    jwks: dict | None = None,
    jwks_url: str | None = None,
    patient: str | None = None,
) -> tuple[Client, str | None]:
    """Register a client in its own unit of work; returns it and its secret (None when it has a key)."""
    with unit_of_work(engine) as conn:
        return register_client(
            conn,
            name=name,
            organization=organization,
            scopes=scopes,
            jwks=jwks,
            jwks_url=jwks_url,
            exchange=exchange,
            patient=patient,
        )


def _engine(settings: Settings) -> Engine:
    from fhir_server.storage import create_db_engine

    return create_db_engine(settings)


@client_app.command("create")
def client_create(
    name: str = typer.Option(..., "--name", help="Who the client is, e.g. the HIS of an institution."),
    organization: str | None = typer.Option(None, "--organization", help="Organization/{id} it acts for."),
    scope: str = typer.Option(..., "--scope", help="Space-separated SMART scopes it may be granted."),
    jwks: Path | None = typer.Option(None, "--jwks", help="A JWKS file with its public key(s): private_key_jwt."),
    jwks_url: str | None = typer.Option(None, "--jwks-url", help="Where its JWKS is published: private_key_jwt."),
    exchange: bool = typer.Option(
        False, "--exchange", help="Acts for the exchange itself: no institution filter; its scopes apply."
    ),
    patient: str | None = typer.Option(
        None, "--patient", help="Patient/{id}: a resident's app, reading that record with patient/ scopes."
    ),
) -> None:
    """Register a client; prints its client_id and, when no key is given, its secret (shown only this once)."""
    settings = load_settings()
    engine = _engine(settings)
    try:
        key_set = json.loads(jwks.read_text()) if jwks else None
        client, secret = create_client(
            engine,
            name=name,
            scopes=scope,
            organization=organization,
            exchange=exchange,
            jwks=key_set,
            jwks_url=jwks_url,
            patient=patient,
        )
    except (RegistryError, json.JSONDecodeError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    note_command(engine, "client create", f"client={client.client_id} organization={client.organization or '-'}")
    typer.echo(f"client_id: {client.client_id}")
    if secret:
        typer.echo(f"client_secret: {secret}")
        typer.echo("(the secret is shown only now; it is stored hashed)")
    if client.patient:
        typer.echo(f"patient: {client.patient}")
    typer.echo(f"scopes: {' '.join(client.scopes)}")


@client_app.command("list")
def client_list() -> None:
    """The registered clients."""
    with unit_of_work(_engine(load_settings()), write=False) as conn:
        clients = find_clients(conn)
    for client in clients:
        method = "private_key_jwt" if client.jwks or client.jwks_url else "client_secret_basic"
        state = "active" if client.active else "inactive"
        typer.echo(
            f"{client.client_id}  {state}  {method}  {client.organization or '-'}  {' '.join(client.scopes)}  "
            f"{client.name}"
        )


@client_app.command("deactivate")
def client_deactivate(client_id: str = typer.Argument(..., help="The client to refuse from now on.")) -> None:
    """Deactivate a client: its tokens stop working within the client cache time."""
    engine = _engine(load_settings())
    with unit_of_work(engine) as conn:
        found = set_active(conn, client_id, False)
    if not found:
        typer.echo(f"error: client '{client_id}' is not registered", err=True)
        raise typer.Exit(2)
    note_command(engine, "client deactivate", f"client={client_id}")
    typer.echo(f"Client {client_id} deactivated.")


@auth_app.command("token")
def token(
    client: str = typer.Option(..., "--client", help="The registered client_id."),
    scope: str | None = typer.Option(None, "--scope", help="Scopes wanted (default: all it is registered for)."),
    lifetime: int | None = typer.Option(None, "--lifetime", help="Seconds (default HIE_AUTH_TOKEN_LIFETIME_SECONDS)."),
) -> None:
    """Print an access token for a registered client, for scripts (run where the database is)."""
    settings = load_settings()
    engine = _engine(settings)
    try:
        access_token, granted = issue_token(engine, settings, client, scope, lifetime=lifetime)
    except RegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    note_command(engine, "token", f"client={client} scope={' '.join(granted)}")
    typer.echo(access_token)


@auth_app.command("demo-client")
def demo_client(
    base: str = typer.Option("http://127.0.0.1:8080", help="Where the server will listen, for the printed curl line."),
) -> None:
    """Create the demo client once (idempotent) and print how to get a token."""
    settings = load_settings()
    engine = _engine(settings)
    with unit_of_work(engine) as conn:
        existing = find_clients(conn, name=DEMO_CLIENT_NAME)
        if existing:
            client, secret = existing[0], None
        else:
            client, secret = register_client(
                conn, name=DEMO_CLIENT_NAME, organization=None, scopes=DEMO_SCOPES, exchange=True
            )
    typer.echo(f"Demo client: {client.client_id} (scopes {' '.join(client.scopes)})")
    if secret:
        typer.echo(f"Demo client secret (shown once): {secret}")
        typer.echo(
            f"Get a token:  curl -s -u '{client.client_id}:{secret}' -d grant_type=client_credentials "
            f"-d 'scope={DEMO_SCOPES}' {base}/auth/token"
        )
    typer.echo(f"Or, on this machine:  TOKEN=$(.venv/bin/hie auth token --client {client.client_id})")
    typer.echo(f'Then:  curl -s -H "Authorization: Bearer $TOKEN" {base}/fhir/Patient')


__all__ = ["auth_app", "create_client", "issue_token"]
