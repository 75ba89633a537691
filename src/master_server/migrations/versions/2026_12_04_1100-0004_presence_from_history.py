"""presence read from the heartbeat history; client_presence goes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 11:00:00.000000

Every heartbeat already appends a row to `heartbeats`; `client_presence` held
a copy of the newest one, rewritten in place by every heartbeat. The copy is
dropped: a client's `last_seen_at` is now its newest `heartbeats.created_at`
and its `last_heartbeat` that row, both one step down the new
(client_id, created_at) index. It takes over from (client_id, seq), which
nothing reads by `seq`.

A presence row newer than its client's history (which the server never
wrote, but a database edited by hand may hold) becomes a history row first,
so no client's `last_seen_at` or `last_heartbeat` changes. The index is built
while the table is locked against writes: on a large history, run the
upgrade (`masterctl migrate`) with the servers stopped.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_index(
        "ix_heartbeats_client_id_created_at",
        "heartbeats",
        ["client_id", "created_at"],
        unique=False,
    )
    if _is_sqlite():
        uptime = "json_extract(p.last_heartbeat, '$.uptime_s')"
        metrics = "json_extract(p.last_heartbeat, '$.metrics')"
    else:
        uptime = "CAST(p.last_heartbeat ->> 'uptime_s' AS double precision)"
        metrics = "NULLIF(p.last_heartbeat -> 'metrics', 'null'::jsonb)"
    op.execute(
        f"""
        INSERT INTO heartbeats (client_id, uptime_s, metrics, created_at)
        SELECT p.client_id, {uptime}, {metrics}, p.last_seen_at
        FROM client_presence p
        WHERE NOT EXISTS (
            SELECT 1 FROM heartbeats h
            WHERE h.client_id = p.client_id AND h.created_at >= p.last_seen_at
        )
        """
    )
    op.drop_index("ix_client_presence_last_seen_at", table_name="client_presence")
    op.drop_table("client_presence")
    op.drop_index("ix_heartbeats_client_id_seq", table_name="heartbeats")


def downgrade() -> None:
    op.create_index(
        "ix_heartbeats_client_id_seq", "heartbeats", ["client_id", "seq"], unique=False
    )
    op.create_table(
        "client_presence",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_presence_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_client_presence")),
    )
    op.create_index(
        "ix_client_presence_last_seen_at",
        "client_presence",
        ["last_seen_at"],
        unique=False,
    )
    # Each client's newest heartbeat, as the server used to keep it.
    if _is_sqlite():
        op.execute(
            """
            INSERT INTO client_presence (client_id, last_seen_at, last_heartbeat)
            SELECT h.client_id, h.created_at, json_object(
                'uptime_s', h.uptime_s,
                'metrics', json(h.metrics),
                'received_at', replace(h.created_at, ' ', 'T') || 'Z'
            )
            FROM heartbeats h
            WHERE h.seq = (
                SELECT n.seq FROM heartbeats n WHERE n.client_id = h.client_id
                ORDER BY n.created_at DESC, n.seq DESC LIMIT 1
            )
            """
        )
    else:
        op.execute(
            """
            INSERT INTO client_presence (client_id, last_seen_at, last_heartbeat)
            SELECT DISTINCT ON (client_id) client_id, created_at, jsonb_build_object(
                'uptime_s', uptime_s,
                'metrics', metrics,
                'received_at', to_char(
                    created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
                )
            )
            FROM heartbeats
            ORDER BY client_id, created_at DESC, seq DESC
            """
        )
    op.drop_index("ix_heartbeats_client_id_created_at", table_name="heartbeats")
