"""whole-second times written by the batch writers get their fraction

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 19:00:00.000000

SQLite keeps times as text and compares them as text. The heartbeat and event
batch writers used to leave the formatting of a time to sqlite3, which writes
a time on the whole second without its fraction ("2026-12-03 10:00:00"), where
SQLAlchemy writes "2026-12-03 10:00:00.000000" everywhere else. The shorter
text sorts before the longer, so such a row fell outside a range that starts
on that very second. This gives those rows the fraction. PostgreSQL stores
real timestamps, so there is nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = [
    ("client_presence", "last_seen_at"),
    ("heartbeats", "created_at"),
    ("events", "created_at"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, column in _COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = {column} || '.000000' "
            f"WHERE length({column}) = 19"
        )


def downgrade() -> None:
    # Both forms read back as the same time; nothing to undo.
    pass
