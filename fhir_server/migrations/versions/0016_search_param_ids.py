"""search: index rows carry an integer parameter id instead of the resource type and parameter names

Every index row named its resource type and parameter as text (``Observation``, ``value-quantity``), in the
row and in most of the table's indexes. ``search_param_ids`` gives each (type, parameter) pair a small integer
once, and the rows carry that ``param_id``. Indexes no search needs go: ``ix_token_lookup`` (token searches
probe the hash indexes, per-resource tests ``ix_token_res``), ``ix_string_lookup``, ``ix_reference_lookup``
(``ix_reference_target`` now leads with ``target_id``) and ``ix_string_hash_exact`` with its column (``:exact``
through ``ix_string_hash_prefix``); the hash indexes, ``ix_reference_url`` and ``ix_quantity_canon`` keep only
the rows that have the value. Each index table is copied into its new form by ranges of ``res_pk`` (its old
indexes dropped with it, the new ones built after the copy); the downgrade copies back.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 20:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhir_server.search.index import search_hash
from fhir_server.search.param_ids import forget

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PKS_PER_BATCH = 20_000

_VALUES = {
    "idx_token": [
        sa.Column("grp", sa.Integer()),
        sa.Column("system", sa.Text()),
        sa.Column("code", sa.Text()),
        sa.Column("text", sa.Text()),
        sa.Column("hash_value", sa.BigInteger()),
        sa.Column("hash_sys_value", sa.BigInteger()),
    ],
    "idx_string": [
        sa.Column("grp", sa.Integer()),
        sa.Column("norm", sa.Text(), nullable=False),
        sa.Column("exact", sa.Text(), nullable=False),
        sa.Column("hash_prefix", sa.BigInteger()),
        sa.Column("hash_exact", sa.BigInteger()),
    ],
    "idx_date": [
        sa.Column("grp", sa.Integer()),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
    ],
    "idx_number": [
        sa.Column("grp", sa.Integer()),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
    ],
    "idx_quantity": [
        sa.Column("grp", sa.Integer()),
        sa.Column("system", sa.Text()),
        sa.Column("code", sa.Text()),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("canon_code", sa.Text()),
        sa.Column("canon_low", sa.Float()),
        sa.Column("canon_high", sa.Float()),
    ],
    "idx_uri": [sa.Column("grp", sa.Integer()), sa.Column("uri", sa.Text(), nullable=False)],
    "idx_reference": [
        sa.Column("grp", sa.Integer()),
        sa.Column("target_type", sa.String(64)),
        sa.Column("target_id", sa.String(64)),
        sa.Column("url", sa.Text()),
    ],
    "idx_coords": [
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
    ],
}
"""The value columns of each index table before, in order."""

_DROPPED = {"idx_string": ("hash_exact",)}
"""Value columns that go: ``:exact`` is served by ``ix_string_hash_prefix`` (the hash of the first character,
then ``norm``), so ``hash_exact`` and its index are not read any more."""

Indexes = list[tuple[str, list[str], bool]]
"""(name, columns, PostgreSQL only)."""

_NEW_INDEXES: dict[str, Indexes] = {
    "idx_token": [
        ("ix_token_value", ["hash_value", "res_pk"], False),
        ("ix_token_sys_value", ["hash_sys_value", "res_pk"], False),
        ("ix_token_res", ["res_pk"], False),
    ],
    "idx_string": [
        ("ix_string_hash_prefix", ["hash_prefix", "norm", "res_pk"], False),
        ("ix_string_res", ["res_pk"], False),
    ],
    "idx_date": [
        ("ix_date_low", ["param_id", "low"], False),
        ("ix_date_high", ["param_id", "high"], False),
        ("ix_date_res_param", ["res_pk", "param_id", "low", "high"], False),
    ],
    "idx_number": [
        ("ix_number_lookup", ["param_id", "low"], False),
        ("ix_number_high", ["param_id", "high"], False),
        ("ix_number_res", ["res_pk"], False),
    ],
    "idx_quantity": [
        ("ix_quantity_lookup", ["param_id", "code", "low"], False),
        ("ix_quantity_canon", ["param_id", "canon_code", "canon_low"], False),
        ("ix_quantity_high", ["param_id", "high"], False),
        ("ix_quantity_res", ["res_pk"], False),
    ],
    "idx_uri": [
        ("ix_uri_lookup", ["param_id", "uri"], False),
        ("ix_uri_prefix", ["param_id", "uri"], True),
        ("ix_uri_res", ["res_pk"], False),
    ],
    "idx_reference": [
        ("ix_reference_target", ["target_id", "target_type", "param_id"], False),
        ("ix_reference_url", ["param_id", "url"], False),
        ("ix_reference_res", ["res_pk"], False),
    ],
    "idx_coords": [
        ("ix_coords_lookup", ["param_id", "latitude", "longitude"], False),
        ("ix_coords_res", ["res_pk"], False),
    ],
}

_OLD_INDEXES: dict[str, Indexes] = {
    "idx_token": [
        ("ix_token_lookup", ["res_type", "param", "code", "system"], False),
        ("ix_token_value", ["hash_value", "res_pk"], False),
        ("ix_token_sys_value", ["hash_sys_value", "res_pk"], False),
        ("ix_token_res", ["res_pk"], False),
    ],
    "idx_string": [
        ("ix_string_lookup", ["res_type", "param", "norm"], False),
        ("ix_string_hash_prefix", ["hash_prefix", "norm", "res_pk"], False),
        ("ix_string_hash_exact", ["hash_exact", "res_pk"], False),
        ("ix_string_res", ["res_pk"], False),
    ],
    "idx_date": [
        ("ix_date_low", ["res_type", "param", "low"], False),
        ("ix_date_high", ["res_type", "param", "high"], False),
        ("ix_date_res_param", ["res_pk", "param", "low", "high"], False),
    ],
    "idx_number": [
        ("ix_number_lookup", ["res_type", "param", "low"], False),
        ("ix_number_high", ["res_type", "param", "high"], False),
        ("ix_number_res", ["res_pk"], False),
    ],
    "idx_quantity": [
        ("ix_quantity_lookup", ["res_type", "param", "code", "low"], False),
        ("ix_quantity_canon", ["res_type", "param", "canon_code", "canon_low"], False),
        ("ix_quantity_high", ["res_type", "param", "high"], False),
        ("ix_quantity_res", ["res_pk"], False),
    ],
    "idx_uri": [
        ("ix_uri_lookup", ["res_type", "param", "uri"], False),
        ("ix_uri_prefix", ["res_type", "param", "uri"], True),
        ("ix_uri_res", ["res_pk"], False),
    ],
    "idx_reference": [
        ("ix_reference_target", ["target_type", "target_id", "param", "res_type"], False),
        ("ix_reference_lookup", ["res_type", "param", "target_id"], False),
        ("ix_reference_url", ["res_type", "param", "url"], False),
        ("ix_reference_res", ["res_pk"], False),
    ],
    "idx_coords": [
        ("ix_coords_lookup", ["res_type", "param", "latitude", "longitude"], False),
        ("ix_coords_res", ["res_pk"], False),
    ],
}


_PARTIAL = {
    "ix_token_value": "hash_value IS NOT NULL",
    "ix_token_sys_value": "hash_sys_value IS NOT NULL",
    "ix_quantity_canon": "canon_code IS NOT NULL",
    "ix_reference_url": "url IS NOT NULL",
}
"""New indexes of only the rows that have the value the searches compare (a text alone, a local reference and a
unit that is not UCUM have none)."""


def upgrade() -> None:
    bind = op.get_bind()
    forget(bind)
    op.create_table(
        "search_param_ids",
        sa.Column("param_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
        sa.UniqueConstraint("res_type", "param", name="uq_search_param_ids"),
    )
    pairs = " UNION ".join(f"SELECT res_type, param FROM {name}" for name in _VALUES)
    bind.execute(
        sa.text(
            "INSERT INTO search_param_ids (res_type, param) "
            f"SELECT res_type, param FROM ({pairs}) pairs ORDER BY res_type, param"
        )
    )
    for name, old_values in _VALUES.items():
        values = [c for c in old_values if c.name not in _DROPPED.get(name, ())]
        keys = [sa.Column("param_id", sa.Integer(), nullable=False)]
        names = ", ".join(c.name for c in values)
        _copy(
            bind,
            name,
            keys,
            values,
            f"SELECT o.res_pk, p.param_id, {', '.join('o.' + c.name for c in values)} FROM {name} o "
            "JOIN search_param_ids p ON p.res_type = o.res_type AND p.param = o.param",
            f"res_pk, param_id, {names}",
            _NEW_INDEXES[name],
        )


def downgrade() -> None:
    bind = op.get_bind()
    for name, values in _VALUES.items():
        keys = [
            sa.Column("res_type", sa.String(64), nullable=False),
            sa.Column("param", sa.String(100), nullable=False),
        ]
        names = ", ".join(c.name for c in values)
        kept = ", ".join("NULL" if c.name in _DROPPED.get(name, ()) else "o." + c.name for c in values)
        _copy(
            bind,
            name,
            keys,
            values,
            f"SELECT o.res_pk, p.res_type, p.param, {kept} FROM {name} o "
            "JOIN search_param_ids p ON p.param_id = o.param_id",
            f"res_pk, res_type, param, {names}",
            _OLD_INDEXES[name],
        )
    op.drop_table("search_param_ids")
    _fill_exact_hashes(bind)
    forget(bind)


def _fill_exact_hashes(bind: sa.Connection) -> None:
    """``hash_exact`` of every string row again, by ranges of ``res_pk`` (through ``ix_string_res``)."""
    top = bind.execute(sa.text("SELECT max(res_pk) FROM idx_string")).scalar() or 0
    select = sa.text(
        "SELECT DISTINCT res_pk, res_type, param, exact FROM idx_string WHERE res_pk > :after AND res_pk <= :upto"
    )
    update = sa.text(
        "UPDATE idx_string SET hash_exact = :hash WHERE res_pk = :pk AND param = :param AND exact = :exact"
    )
    for after in range(0, top, _PKS_PER_BATCH):
        rows = bind.execute(select, {"after": after, "upto": after + _PKS_PER_BATCH}).all()
        if rows:
            bind.execute(
                update,
                [
                    {"hash": search_hash(t, param, exact), "pk": pk, "param": param, "exact": exact}
                    for pk, t, param, exact in rows
                ],
            )


def _copy(
    bind: sa.Connection,
    name: str,
    keys: list[sa.Column],
    values: list[sa.Column],
    select: str,
    columns: str,
    indexes: Indexes,
) -> None:
    """Rebuild ``name`` as (res_pk, keys…, values…) from ``select`` (aliased ``o``), by ranges of ``res_pk``."""
    pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        f"{name}_next",
        sa.Column("res_pk", pk, sa.ForeignKey("resources.res_pk", ondelete="CASCADE"), nullable=False),
        *keys,
        *[sa.Column(c.name, c.type, nullable=c.nullable) for c in values],
    )
    top = bind.execute(sa.text(f"SELECT max(res_pk) FROM {name}")).scalar() or 0
    copy = sa.text(f"INSERT INTO {name}_next ({columns}) {select} WHERE o.res_pk > :after AND o.res_pk <= :upto")
    for after in range(0, top, _PKS_PER_BATCH):
        bind.execute(copy, {"after": after, "upto": after + _PKS_PER_BATCH})
    op.drop_table(name)
    op.rename_table(f"{name}_next", name)
    postgres = bind.dialect.name == "postgresql"
    new_form = keys[0].name == "param_id"
    for index, index_columns, postgres_only in indexes:
        if postgres_only and not postgres:
            continue
        ops = (
            {c: "text_pattern_ops" for c in index_columns if c in ("norm", "uri")}
            if postgres_only or (index == "ix_string_hash_prefix")
            else {}
        )
        where = sa.text(_PARTIAL[index]) if index in _PARTIAL and new_form else None
        op.create_index(index, name, index_columns, postgresql_ops=ops, sqlite_where=where, postgresql_where=where)
