"""search: columns and indexes for large archives

Hash columns on token and string rows (one equality probe on a bigint index that ends in ``res_pk``) and
quantities in UCUM base units. Existing rows are filled in place: one UPDATE per distinct token and string value
(through the existing lookup indexes) and one statement for every quantity row; `hie db reindex` gives the same
result from the stored resources.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhir_server.search import ucum
from fhir_server.search.index import search_hash

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    op.add_column("idx_token", sa.Column("hash_value", sa.BigInteger(), nullable=True))
    op.add_column("idx_token", sa.Column("hash_sys_value", sa.BigInteger(), nullable=True))
    op.add_column("idx_string", sa.Column("hash_prefix", sa.BigInteger(), nullable=True))
    op.add_column("idx_string", sa.Column("hash_exact", sa.BigInteger(), nullable=True))
    op.add_column("idx_quantity", sa.Column("canon_code", sa.Text(), nullable=True))
    op.add_column("idx_quantity", sa.Column("canon_low", sa.Float(), nullable=True))
    op.add_column("idx_quantity", sa.Column("canon_high", sa.Float(), nullable=True))
    bind = op.get_bind()
    _fill_tokens(bind)
    _fill_strings(bind)
    _fill_quantities(bind)
    op.create_index("ix_token_value", "idx_token", ["hash_value", "res_pk"])
    op.create_index("ix_token_sys_value", "idx_token", ["hash_sys_value", "res_pk"])
    op.create_index(
        "ix_string_hash_prefix",
        "idx_string",
        ["hash_prefix", "norm", "res_pk"],
        postgresql_ops={"norm": "text_pattern_ops"},
    )
    op.create_index("ix_string_hash_exact", "idx_string", ["hash_exact", "res_pk"])
    op.create_index("ix_quantity_canon", "idx_quantity", ["res_type", "param", "canon_code", "canon_low"])
    if bind.dialect.name == "postgresql":
        op.drop_index("ix_string_prefix", table_name="idx_string")


def _batches(bind: sa.Connection, query: str) -> list[list[tuple]]:
    """The distinct values, read in full before the updates start (SQLite cannot update under an open read)."""
    rows = [tuple(row) for row in bind.execute(sa.text(query))]
    return [rows[i : i + _BATCH] for i in range(0, len(rows), _BATCH)]


def _fill_tokens(bind: sa.Connection) -> None:
    with_system = sa.text(
        "UPDATE idx_token SET hash_value = :hv, hash_sys_value = :hsv "
        "WHERE res_type = :t AND param = :p AND code = :c AND system = :s"
    )
    without_system = sa.text(
        "UPDATE idx_token SET hash_value = :hv, hash_sys_value = :hsv "
        "WHERE res_type = :t AND param = :p AND code = :c AND system IS NULL"
    )
    query = "SELECT DISTINCT res_type, param, system, code FROM idx_token WHERE code IS NOT NULL"
    for rows in _batches(bind, query):
        params = [
            {"t": t, "p": p, "s": s, "c": c, "hv": search_hash(t, p, c), "hsv": search_hash(t, p, s, c)}
            for t, p, s, c in rows
        ]
        if with_rows := [row for row in params if row["s"] is not None]:
            bind.execute(with_system, with_rows)
        if bare := [row for row in params if row["s"] is None]:
            bind.execute(without_system, bare)


def _fill_strings(bind: sa.Connection) -> None:
    update = sa.text(
        "UPDATE idx_string SET hash_prefix = :hp, hash_exact = :he "
        "WHERE res_type = :t AND param = :p AND norm = :n AND exact = :e"
    )
    query = "SELECT DISTINCT res_type, param, norm, exact FROM idx_string"
    for rows in _batches(bind, query):
        bind.execute(
            update,
            [
                {"t": t, "p": p, "n": n, "e": e, "hp": search_hash(t, p, n[:1]), "he": search_hash(t, p, e)}
                for t, p, n, e in rows
            ],
        )


def _fill_quantities(bind: sa.Connection) -> None:
    units = bind.execute(
        sa.text("SELECT DISTINCT code FROM idx_quantity WHERE system = :s AND code IS NOT NULL"),
        {"s": ucum.UCUM_SYSTEM},
    ).scalars()
    update = sa.text(
        "UPDATE idx_quantity SET canon_code = :cc, canon_low = low * :f + :o, canon_high = high * :f + :o "
        "WHERE system = :s AND code = :c"
    )
    for code in list(units):
        unit = ucum.canonical(code)
        if unit is not None:
            bind.execute(
                update, {"cc": unit.code, "f": unit.factor, "o": unit.offset, "s": ucum.UCUM_SYSTEM, "c": code}
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_string_prefix", "idx_string", ["res_type", "param", "norm"], postgresql_ops={"norm": "text_pattern_ops"}
        )
    op.drop_index("ix_quantity_canon", table_name="idx_quantity")
    op.drop_index("ix_string_hash_exact", table_name="idx_string")
    op.drop_index("ix_string_hash_prefix", table_name="idx_string")
    op.drop_index("ix_token_sys_value", table_name="idx_token")
    op.drop_index("ix_token_value", table_name="idx_token")
    for table, columns in (
        ("idx_quantity", ("canon_high", "canon_low", "canon_code")),
        ("idx_string", ("hash_exact", "hash_prefix")),
        ("idx_token", ("hash_sys_value", "hash_value")),
    ):
        with op.batch_alter_table(table) as batch_op:
            for column in columns:
                batch_op.drop_column(column)
