"""The one settings object (``HIE_`` environment prefix), built explicitly and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_PATH = Path("var") / "hie.db"


class Settings(BaseSettings):
    """Runtime configuration of the exchange; every field reads ``HIE_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="HIE_", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_DB_PATH}"
    base_url: str | None = None
    """Public base URL of the FHIR endpoint; derived from the request when unset."""

    max_body_bytes: int = 50 * 1024 * 1024
    max_bundle_entries: int = 10_000
    default_page_size: int = 20
    max_page_size: int = 1000
    search_count_limit: int = 10_000
    """Bundle.total counts at most this many matches; past it PostgreSQL's estimate is given, flagged in an
    outcome entry (SQLite counts on). ``_total=accurate`` always counts."""
    allow_multiple_delete: bool = True
    """Conditional delete may remove several matches (otherwise several matches → 412)."""
    max_conditional_delete: int = 100
    allow_expunge: bool = False
    """``$expunge`` (hard delete of every version) is refused with 403 unless this is set."""
    sqlite_busy_timeout_ms: int = 30_000
    pool_size: int = 10

    background: str = "thread"
    """Who runs outbox dispatch and bulk export: ``thread`` (in-process), ``celery`` (workers on Redis) or ``off``."""
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_queue: str = "hie"
    background_poll_seconds: float = 1.0
    """How often idle background work looks for due work it was not woken for (other processes' commits)."""
    outbox_retention_seconds: int = 7 * 24 * 3600
    """Matched outbox rows and finished deliveries are kept this long (the window ``$resend`` can replay)."""
    subscription_max_attempts: int = 5
    subscription_retry_base_seconds: float = 2.0
    """Rest-hook retries wait base × 2^(attempt − 1) seconds; after the last attempt the Subscription is ``error``."""
    subscription_timeout_seconds: float = 10.0
    subscription_signing_key: str | None = None
    """Signs rest-hook notifications of Subscriptions that carry no signing-secret extension of their own."""
    export_dir: Path = Path("var") / "exports"
    export_ttl_seconds: int = 3600
    """Bulk export files are deleted this long after the export completed (Bulk Data IG v2 §Response - Complete)."""
    export_file_max_resources: int = 100_000

    auth_disabled: bool = False
    """Every request runs as an unrestricted caller: for local experiments only (warned loudly)."""
    auth_token_lifetime_seconds: int = 300
    """Lifetime of the access tokens ``/auth/token`` issues."""
    auth_token_url: str | None = None
    """The token endpoint URL client assertions must name as ``aud``; derived from ``base_url`` or the request."""
    auth_signing_key: str | None = None
    """PEM private key (EC P-256 or RSA) signing access tokens; else one is generated once and kept in the database."""
    auth_client_cache_seconds: float = 30.0
    """How long a verified client's registry row (active flag, organization) is reused before it is read again."""
    auth_jwks_url: str | None = None
    """An external identity provider's JWKS: its tokens are accepted too (``auth_issuer``, ``auth_audience``)."""
    auth_jwks_refetch_seconds: float = 30.0
    """An unknown ``kid`` refetches the provider's JWKS at most this often (its keys are cached 5 minutes)."""
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_scope_claim: str = "scope"
    auth_client_claim: str = "azp"
    auth_organization_claim: str = "organization"
    auth_patient_claim: str = "patient"
    auth_user_claim: str = "sub"

    audit_enabled: bool = True
    """Every request is recorded in the hash-chained audit log (off only to measure its cost)."""
    audit_batch_size: int = 500
    audit_flush_seconds: float = 0.2
    """Queued audit events are written at least this often, in batches of up to ``audit_batch_size``."""
    audit_spool: bool = True
    """Each queued audit event is also appended to a local spool file, replayed at start-up if the process was
    killed before writing it (docs/SECURITY.md, "Audit")."""
    audit_spool_dir: Path | None = None
    """Folder of the spool files; by default next to a SQLite database file, else ``var/audit-spool/<database>``."""
    rate_limit_per_second: float = 0.0
    """Requests per second each client (or remote address) may make, per worker process; 0 turns limits off."""
    rate_limit_burst: int = 0
    """Requests a client may make at once before the rate applies (token bucket size); 0 means 2 × the rate."""
    request_timeout_seconds: float = 120.0
    """A request still running after this long is answered 503 (0 turns the timeout off)."""
    cors_origins: str = ""
    """Comma-separated origins allowed by CORS (``*`` for any); empty turns CORS off."""
    hsts: bool = False
    """Send ``Strict-Transport-Security`` (only behind HTTPS)."""

    break_glass_organizations: str = ""
    """Comma-separated ``Organization/{id}`` of the emergency services (the 12349 centre, 120 ambulances) whose
    clients may read beyond consent with ``X-Break-Glass-Reason`` (docs/SECURITY.md, "Break-glass")."""

    mpi_enabled: bool = True
    """Patient writes pass through the master patient index (golden Patients, links, review Tasks; docs/MPI.md)."""
    mpi_golden_rebuild: Literal["background", "after-commit", "inline", "queued"] = "background"
    """When goldens are rebuilt after a record's write: ``background`` (after commit, by a thread of the process),
    ``after-commit`` (after commit, before the request returns), ``inline`` (in the writer's unit of work) or
    ``queued`` (only queued, for ``hie mpi rebuild``: batch commands)."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (tests, CLI options)."""
    return Settings(**overrides)
