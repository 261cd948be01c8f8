"""Relational storage of resources, their versions and their search index rows (SQLite and PostgreSQL)."""

from fhir_server.storage.engine import create_db_engine, unit_of_work
from fhir_server.storage.tables import metadata

__all__ = ["create_db_engine", "metadata", "unit_of_work"]
