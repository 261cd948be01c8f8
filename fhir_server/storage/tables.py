"""Schema: one row per resource (current state), one per version (the JSON body), index rows per parameter type.

Layout after HAPI FHIR JPA: the version table carries the canonical JSON bytes; index tables hold only the
current version's values and are keyed by ``res_pk`` so that they distribute by resource.
"""

from __future__ import annotations

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
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_ts", "res_type", "ts"),
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


def _group_column() -> Column:
    return Column("grp", Integer, nullable=True, comment="composite parameters: the element the row belongs to")


token_index = Table(
    "idx_token",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    Index("ix_token_lookup", "res_type", "param", "code", "system"),
    Index("ix_token_res", "res_pk"),
)

string_index = Table(
    "idx_string",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("norm", Text, nullable=False, comment="case- and accent-folded value for prefix match"),
    Column("exact", Text, nullable=False),
    Index("ix_string_lookup", "res_type", "param", "norm"),
    # PostgreSQL uses a btree for LIKE 'prefix%' only with pattern operators (whatever the database collation).
    Index("ix_string_prefix", "res_type", "param", "norm", postgresql_ops={"norm": "text_pattern_ops"}).ddl_if(
        dialect="postgresql"
    ),
    Index("ix_string_res", "res_pk"),
)

date_index = Table(
    "idx_date",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("low", BigInteger, nullable=False, comment="microseconds since the epoch, inclusive"),
    Column("high", BigInteger, nullable=False, comment="microseconds since the epoch, inclusive"),
    Index("ix_date_low", "res_type", "param", "low"),
    Index("ix_date_high", "res_type", "param", "high"),
    Index("ix_date_res", "res_pk"),
)

number_index = Table(
    "idx_number",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Index("ix_number_lookup", "res_type", "param", "low"),
    Index("ix_number_high", "res_type", "param", "high"),
    Index("ix_number_res", "res_pk"),
)

quantity_index = Table(
    "idx_quantity",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Index("ix_quantity_lookup", "res_type", "param", "code", "low"),
    Index("ix_quantity_high", "res_type", "param", "high"),
    Index("ix_quantity_res", "res_pk"),
)

uri_index = Table(
    "idx_uri",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("uri", Text, nullable=False),
    Index("ix_uri_lookup", "res_type", "param", "uri"),
    Index("ix_uri_prefix", "res_type", "param", "uri", postgresql_ops={"uri": "text_pattern_ops"}).ddl_if(
        dialect="postgresql"
    ),
    Index("ix_uri_res", "res_pk"),
)

reference_index = Table(
    "idx_reference",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    _group_column(),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True, comment="absolute or canonical reference that is not local"),
    Index("ix_reference_target", "target_type", "target_id", "param", "res_type"),
    Index("ix_reference_lookup", "res_type", "param", "target_id"),
    Index("ix_reference_url", "res_type", "param", "url"),
    Index("ix_reference_res", "res_pk"),
)

coords_index = Table(
    "idx_coords",
    metadata,
    Column("res_pk", PK, ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("latitude", Float, nullable=False, comment="WGS84 degrees"),
    Column("longitude", Float, nullable=False, comment="WGS84 degrees"),
    Index("ix_coords_lookup", "res_type", "param", "latitude", "longitude"),
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
