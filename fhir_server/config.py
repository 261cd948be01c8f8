"""The one settings object (``HIE_`` environment prefix), built explicitly and passed in."""

from __future__ import annotations

from pathlib import Path

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


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (tests, CLI options)."""
    return Settings(**overrides)
