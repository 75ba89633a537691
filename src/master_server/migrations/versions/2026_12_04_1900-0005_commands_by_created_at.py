"""commands listed by created_at, then seq

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:00:00.000000

A client's commands are listed newest first and polled oldest first by
`created_at` (the server's time of the request), then `seq`. With several
server processes a command created first can be stored second, and a list
in `seq` order then disagreed with the times it shows. The new
(client_id, created_at) index serves the list; it takes over from
(client_id, seq), which nothing reads any more. The poll still finds a
client's pending commands through (client_id, status, seq).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_commands_client_id_created_at",
        "commands",
        ["client_id", "created_at"],
    )
    op.drop_index("ix_commands_client_id_seq", table_name="commands")


def downgrade() -> None:
    op.create_index("ix_commands_client_id_seq", "commands", ["client_id", "seq"])
    op.drop_index("ix_commands_client_id_created_at", table_name="commands")
