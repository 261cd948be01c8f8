"""Bulk Data jobs and imports: export job state and finished files, import progress and rejected records."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from fhir_server.storage.tables import metadata, resources

# Exports read each type in res_pk order, a chunk at a time.
Index("ix_resources_type_pk", resources.c.res_type, resources.c.res_pk)

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(12), nullable=False, comment="queued, running, complete, error, cancelled or expired"),
    Column("level", String(8), nullable=False, comment="system, patient or group"),
    Column("group_id", String(64), nullable=True),
    Column("types", Text, nullable=True, comment="JSON array of _type, NULL for every type"),
    Column("since", BigInteger, nullable=True, comment="_since, microseconds since the epoch"),
    Column("type_filters", Text, nullable=True, comment="JSON array of _typeFilter queries"),
    Column("request_url", Text, nullable=False),
    Column("transaction_time", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("progress", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("owner", String(64), nullable=True, comment="the worker running the job"),
    Column("lease_until", BigInteger, nullable=False, default=0),
    Column("requester", Text, nullable=True, comment="access of the requesting client as JSON; NULL: unrestricted"),
    Index("ix_export_jobs_status", "status", "lease_until"),
)

export_files = Table(
    "export_files",
    metadata,
    Column("job_id", String(36), ForeignKey("export_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("part", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("last_pk", BigInteger, nullable=False, comment="the file holds resources up to this res_pk"),
    PrimaryKeyConstraint("job_id", "name", name="pk_export_files"),
)

import_sources = Table(
    "import_sources",
    metadata,
    Column("source", String(1024), primary_key=True, comment="absolute path of an imported file"),
    Column("fingerprint", String(64), nullable=False, comment="size and modification time at the start"),
    Column("done_bytes", BigInteger, nullable=False, default=0, comment="bytes of the file done"),
    Column("records", Integer, nullable=False, default=0),
    Column("accepted", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("complete", Boolean, nullable=False, default=False),
    Column("updated_at", BigInteger, nullable=False),
)

import_rejects = Table(
    "import_rejects",
    metadata,
    Column("source", String(1024), nullable=False),
    Column("record", Integer, nullable=False, comment="line of an NDJSON file, entry of a Bundle (1-based)"),
    Column("res_type", String(64), nullable=True),
    Column("res_id", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("source", "record", name="pk_import_rejects"),
)
