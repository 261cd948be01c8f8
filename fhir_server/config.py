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
    sqlite_busy_timeout_ms: int = 30_000
    pool_size: int = 10


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (tests, CLI options)."""
    return Settings(**overrides)
