"""Schema: one row per resource (current state), one per version (the JSON body), index rows per parameter type.

Layout after HAPI FHIR JPA: the version table carries the canonical JSON bytes; index tables hold only the
current version's values and are keyed by ``res_pk`` so that they distribute by resource.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
PK = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("res_pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False, comment="last update, microseconds since the Unix epoch (UTC)"),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("owner_org", String(128), nullable=True, comment="Organization/{id} that created it; NULL: the exchange"),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_ts", "res_type", "ts"),
    Index("ix_resources_owner", "owner_org", "res_type"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("method", String(8), nullable=False, comment="POST, PUT, PATCH or DELETE"),
    Column("body", LargeBinary, nullable=True, comment="canonical JSON; NULL for a delete tombstone"),
    PrimaryKeyConstraint("res_pk", "version", name="pk_resource_versions"),
    Index("ix_versions_ts", "ts"),
    Index("ix_versions_type_ts", "res_type", "ts"),
)


search_param_ids = Table(
    "search_param_ids",
    metadata,
    Column("param_id", Integer, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False, comment="code, code$i (composite component), code:identifier"),
    UniqueConstraint("res_type", "param", name="uq_search_param_ids"),
)
"""Integer ids of (resource type, search parameter), given once per database (``search.param_ids``)."""

search_date_spans = Table(
    "search_date_spans",
    metadata,
    Column("param_id", Integer, primary_key=True, autoincrement=False),
    Column("span", BigInteger, nullable=False, comment="upper bound of a resource's latest high less earliest low"),
)
"""Per date parameter, how far a resource's date rows of it reach (``search.date_spans``; migration 0017)."""


def _param_id_column() -> Column:
    return Column("param_id", Integer, nullable=False, comment="search_param_ids: resource type and parameter")


def _present(column: str) -> dict[str, Any]:
    """A partial index of the rows that have ``column``: every query it serves compares that column."""
    return {"sqlite_where": text(f"{column} IS NOT NULL"), "postgresql_where": text(f"{column} IS NOT NULL")}


def _group_column() -> Column:
    return Column("grp", Integer, nullable=True, comment="composite parameters: the element the row belongs to")


token_index = Table(
    "idx_token",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    Column("hash_value", BigInteger, nullable=True, comment="search_hash(res_type, param, code)"),
    Column("hash_sys_value", BigInteger, nullable=True, comment="search_hash(res_type, param, system, code)"),
    # Rows of a text alone (CodeableConcept.text: no code, no hashes) are left out of the hash indexes.
    Index("ix_token_value", "hash_value", "res_pk", **_present("hash_value")),
    Index("ix_token_sys_value", "hash_sys_value", "res_pk", **_present("hash_sys_value")),
    Index("ix_token_res", "res_pk"),
)

string_index = Table(
    "idx_string",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("norm", Text, nullable=False, comment="case- and accent-folded value for prefix match"),
    Column("exact", Text, nullable=False),
    Column("hash_prefix", BigInteger, nullable=True, comment="search_hash(res_type, param, first character of norm)"),
    # PostgreSQL uses a btree for LIKE 'prefix%' only with pattern operators (whatever the database collation).
    Index("ix_string_hash_prefix", "hash_prefix", "norm", "res_pk", postgresql_ops={"norm": "text_pattern_ops"}),
    Index("ix_string_res", "res_pk"),
)

date_index = Table(
    "idx_date",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("low", BigInteger, nullable=False, comment="microseconds since the epoch, inclusive"),
    Column("high", BigInteger, nullable=False, comment="microseconds since the epoch, inclusive"),
    Index("ix_date_low", "param_id", "low", "res_pk"),  # covering: a date window reads no table row
    Index("ix_date_high", "param_id", "high"),
    Index("ix_date_res_param", "res_pk", "param_id", "low", "high"),
)

number_index = Table(
    "idx_number",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Index("ix_number_lookup", "param_id", "low"),
    Index("ix_number_high", "param_id", "high"),
    Index("ix_number_res", "res_pk"),
)

quantity_index = Table(
    "idx_quantity",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("canon_code", Text, nullable=True, comment="UCUM base units of the value (g.m-3), if convertible"),
    Column("canon_low", Float, nullable=True, comment="low in the base units of canon_code"),
    Column("canon_high", Float, nullable=True, comment="high in the base units of canon_code"),
    Index("ix_quantity_lookup", "param_id", "code", "low"),
    Index("ix_quantity_canon", "param_id", "canon_code", "canon_low", **_present("canon_code")),
    Index("ix_quantity_high", "param_id", "high"),
    Index("ix_quantity_res", "res_pk"),
)

uri_index = Table(
    "idx_uri",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("uri", Text, nullable=False),
    Index("ix_uri_lookup", "param_id", "uri"),
    Index("ix_uri_prefix", "param_id", "uri", postgresql_ops={"uri": "text_pattern_ops"}).ddl_if(dialect="postgresql"),
    Index("ix_uri_res", "res_pk"),
)

reference_index = Table(
    "idx_reference",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    _group_column(),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True, comment="absolute or canonical reference that is not local"),
    Index("ix_reference_target", "target_id", "target_type", "param_id"),
    Index("ix_reference_url", "param_id", "url", **_present("url")),  # most references are local: no url
    Index("ix_reference_res", "res_pk"),
)

coords_index = Table(
    "idx_coords",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    _param_id_column(),
    Column("latitude", Float, nullable=False, comment="WGS84 degrees"),
    Column("longitude", Float, nullable=False, comment="WGS84 degrees"),
    Index("ix_coords_lookup", "param_id", "latitude", "longitude"),
    Index("ix_coords_res", "res_pk"),
)

INDEX_TABLES = {
    "token": token_index,
    "string": string_index,
    "date": date_index,
    "number": number_index,
    "quantity": quantity_index,
    "uri": uri_index,
    "reference": reference_index,
    "coords": coords_index,
}

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False, comment="position in the chain"),
    Column("recorded", BigInteger, nullable=False, comment="microseconds since the Unix epoch (UTC)"),
    Column("client_id", String(128), nullable=True),
    Column("organization", String(128), nullable=True),
    Column("action", String(1), nullable=False, comment="C, R, U, D or E"),
    Column("outcome", String(2), nullable=False, comment="0, 4, 8 or 12"),
    Column("event", Text, nullable=False, comment="the AuditEvent as canonical JSON (sorted keys)"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, comment="SHA-256 of prev_hash and event"),
    Index("ix_audit_log_recorded", "recorded"),
)
"""Append-only (triggers refuse UPDATE and DELETE); each row's hash chains it to the one before."""

audit_patients = Table(
    "audit_patients",
    metadata,
    Column("patient", String(80), nullable=False, comment="Patient/{id}"),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("patient", "seq", name="pk_audit_patients"),
)
"""The residents each audit event is about: ``$access-log`` is one index range scan."""

auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("organization", String(128), nullable=True, comment="Organization/{id} of the institution"),
    Column("scopes", Text, nullable=False, comment="the SMART scopes it may be granted, space separated"),
    Column("secret_hash", Text, nullable=True, comment="scrypt of the client_secret_basic secret, with its salt"),
    Column("jwks", Text, nullable=True, comment="the registered JSON Web Key Set for private_key_jwt"),
    Column("jwks_url", Text, nullable=True),
    Column("active", Boolean, nullable=False),
    Column("exchange", Boolean, nullable=False, comment="acts for the exchange itself: no institution filter"),
    Column("created_at", BigInteger, nullable=False, comment="microseconds since the Unix epoch (UTC)"),
    Column("patient", String(128), nullable=True, comment="Patient/{id} of the resident a resident app acts for"),
)
"""Registered clients of the token endpoint (SMART Backend Services)."""

auth_assertion_jtis = Table(
    "auth_assertion_jtis",
    metadata,
    Column("client_id", String(64), nullable=False),
    Column("jti", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False, comment="the assertion's exp, seconds since the epoch"),
    PrimaryKeyConstraint("client_id", "jti", name="pk_auth_assertion_jtis"),
    Index("ix_auth_assertion_jtis_expires", "expires_at"),
)
"""Client-assertion ``jti`` values seen while their assertion is valid: a replay is refused (RFC 7523 §3)."""

auth_signing_keys = Table(
    "auth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
"""The exchange's own access-token signing keys, shared by every worker process; the oldest one signs."""

consent_grants = Table(
    "consent_grants",
    metadata,
    Column("consent_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("patient_id", String(64), nullable=False, comment="id of the Patient the Consent is about"),
    Column("effect", String(8), nullable=False, comment="permit or deny"),
    Column("depth", Integer, nullable=False, comment="-1 opt-in base, 0 root provision, 1+ nested provisions"),
    Column("org", String(128), nullable=True, comment="Organization/{id} the rule is for; NULL: every institution"),
    Column("res_type", String(64), nullable=True, comment="resource type (provision.class); NULL: every type"),
    Column("label_system", Text, nullable=True),
    Column("label_code", Text, nullable=True, comment="security label (provision.securityLabel); NULL: any"),
    Column("code_system", Text, nullable=True),
    Column("code", Text, nullable=True, comment="clinical code (provision.code); NULL: any"),
    Column("purpose", String(64), nullable=True, comment="PurposeOfUse code (provision.purpose); NULL: any"),
    Column("low", BigInteger, nullable=True, comment="provision.period start, microseconds; NULL: open"),
    Column("high", BigInteger, nullable=True, comment="provision.period end, microseconds; NULL: open"),
    Index("ix_consent_grants_patient", "patient_id", "effect"),
    Index("ix_consent_grants_consent", "consent_pk"),
)
"""Regional-sharing Consents flattened to rules, kept in step with each Consent write (access control)."""

# -- master patient index (ehr_archive.mpi; migration 0009) --------------------------------------------------

mpi_goldens = Table(
    "mpi_goldens",
    metadata,
    Column("golden_id", String(64), primary_key=True, comment="id of the golden (master) Patient"),
    Column("active", Boolean, nullable=False, comment="False once merged into another golden or left empty"),
)

mpi_records = Table(
    "mpi_records",
    metadata,
    Column("source_id", String(64), primary_key=True, comment="id of an institution's (source) Patient"),
    Column("golden_id", String(64), nullable=False),
    Column("link_kind", String(16), nullable=False, comment="auto, new, review, manual or merged"),
    Column("active", Boolean, nullable=False, comment="False when merged away (no longer a match candidate)"),
    Column("demographics", Text, nullable=False, comment="JSON: the Patient's identity elements, for scoring"),
    Column("updated_at", BigInteger, nullable=False, comment="microseconds since the Unix epoch (UTC)"),
    Index("ix_mpi_records_golden", "golden_id"),
)

mpi_blocking_keys = Table(
    "mpi_blocking_keys",
    metadata,
    Column("key_hash", BigInteger, nullable=False, comment="64-bit hash of a blocking key (rid:…, tel:…, …)"),
    Column("source_id", String(64), nullable=False),
    PrimaryKeyConstraint("key_hash", "source_id", name="pk_mpi_blocking_keys"),
    Index("ix_mpi_blocking_keys_source", "source_id"),
)
"""Candidates of a record are one index probe per blocking key (ehr_archive.matching.blocking)."""

mpi_distinct = Table(
    "mpi_distinct",
    metadata,
    Column("source_id", String(64), nullable=False),
    Column("golden_id", String(64), nullable=False),
    Column("decided_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("source_id", "golden_id", name="pk_mpi_distinct"),
)
"""Reviewed "not the same person" decisions: the record is never linked to that golden automatically."""

mpi_golden_queue = Table(
    "mpi_golden_queue",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("golden_id", String(64), nullable=False, comment="golden Patient whose records changed"),
    Column("queued_at", BigInteger, nullable=False, comment="microseconds since the Unix epoch (UTC)"),
    Index("ix_mpi_golden_queue_golden", "golden_id"),
)
"""Goldens to rebuild after commit (migration 0014): filled in the writer's unit of work, drained after it."""

mpi_merges = Table(
    "mpi_merges",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False, comment="source (two records) or golden (two goldens)"),
    Column("source_id", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    Column("state", Text, nullable=False, comment="JSON: versions before the merge and what it moved"),
    Column("merged_at", BigInteger, nullable=False),
    Column("undone_at", BigInteger, nullable=True),
    Index("ix_mpi_merges_source", "source_id"),
)
