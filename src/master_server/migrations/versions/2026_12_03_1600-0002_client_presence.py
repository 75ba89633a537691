"""client presence in a table of its own

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 16:00:00.000000

`last_seen_at` and `last_heartbeat` move from `clients` to `client_presence`,
one row per client that has sent a heartbeat. Heartbeats rewrite these two
columns all the time; on `clients` every such update also touched the table's
five indexes and kept its pages from ever being all-visible, so paging through
the clients had to visit the heap for every row it skipped.

On SQLite the columns are dropped and added with plain ALTER TABLE
(`recreate="never"`), never by copying `clients` into a new table: with
foreign keys on, dropping the old table would cascade to every row that
refers to a client (heartbeats, events, commands, assignments).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
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
    op.execute(
        """
        INSERT INTO client_presence (client_id, last_seen_at, last_heartbeat)
        SELECT id, last_seen_at, last_heartbeat FROM clients
        WHERE last_seen_at IS NOT NULL AND last_heartbeat IS NOT NULL
        """
    )
    with op.batch_alter_table("client_presence", schema=None) as batch_op:
        batch_op.create_index(
            "ix_client_presence_last_seen_at", ["last_seen_at"], unique=False
        )
    with op.batch_alter_table("clients", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_clients_last_seen_at")
        batch_op.drop_column("last_heartbeat")
        batch_op.drop_column("last_seen_at")


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_heartbeat", _json(), nullable=True))
        batch_op.create_index("ix_clients_last_seen_at", ["last_seen_at"], unique=False)
    op.execute(
        """
        UPDATE clients SET
            last_seen_at = (
                SELECT p.last_seen_at FROM client_presence p
                WHERE p.client_id = clients.id
            ),
            last_heartbeat = (
                SELECT p.last_heartbeat FROM client_presence p
                WHERE p.client_id = clients.id
            )
        WHERE id IN (SELECT client_id FROM client_presence)
        """
    )
    with op.batch_alter_table("client_presence", schema=None) as batch_op:
        batch_op.drop_index("ix_client_presence_last_seen_at")
    op.drop_table("client_presence")
