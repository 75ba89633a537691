"""Statements for events: batched inserts and the newest-first query.

As for heartbeats (see their repository), a PostgreSQL batch is one
statement, run in autocommit, and a SQLite batch one function on the driver's
thread. Rows are inserted in the order given, so `seq` follows arrival order
within a batch as across them.
"""

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.batching import PgConnection, SqliteCodec
from master_server.core.deps import Page
from master_server.heartbeats.repository import (
    OWNER_ID_SQL,
    accepted_rows_sql,
    token_owners_sqlite,
)
from master_server.models import Event, EventLevel


@dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    client_id: uuid.UUID
    token_hash: str
    level: str
    message: str
    data_json: str | None  # already serialized
    created_at: datetime


# $1 ids, $2 client ids, $3 token hashes, $4 levels, $5 messages, $6 data,
# $7 times of receipt.
_POSTGRESQL_STORE = f"""
WITH batch AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::timestamptz[]
    ) WITH ORDINALITY AS b(
        id, client_id, token_hash, level, message, data, created_at, ordinal
    )
),
{accepted_rows_sql("$2")},
stored AS (
    INSERT INTO events (id, client_id, level, message, data, created_at)
    SELECT id, client_id, level, message, CAST(data AS jsonb), created_at
    FROM accepted
    ORDER BY ordinal
)
SELECT {OWNER_ID_SQL} AS owner_id
FROM batch b
LEFT JOIN accepted a ON a.ordinal = b.ordinal
ORDER BY b.ordinal
"""


async def store_batch(
    db: PgConnection, rows: Sequence[EventRow]
) -> list[uuid.UUID | None]:
    """Store the rows whose token is their client's, on PostgreSQL.

    Returns, per row and in order, the client holding its token, if any.
    """
    records = await db.fetch(
        _POSTGRESQL_STORE,
        [row.id for row in rows],
        [row.client_id for row in rows],
        [row.token_hash for row in rows],
        [row.level for row in rows],
        [row.message for row in rows],
        [row.data_json for row in rows],
        [row.created_at for row in rows],
    )
    return [owner_id for (owner_id,) in records]


_SQLITE_INSERT = """
INSERT INTO events (id, client_id, level, message, data, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""


def store_batch_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, rows: Sequence[EventRow]
) -> list[uuid.UUID | None]:
    """`store_batch` for SQLite, in a transaction of its own (BEGIN IMMEDIATE)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        owners = token_owners_sqlite(db, codec, {row.token_hash for row in rows})
        db.executemany(
            _SQLITE_INSERT,
            [
                (
                    codec.to_id(row.id),
                    codec.to_id(row.client_id),
                    row.level,
                    row.message,
                    row.data_json,
                    codec.to_time(row.created_at),
                )
                for row in rows
                if owners.get(row.token_hash) == row.client_id
            ],
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return [owners.get(row.token_hash) for row in rows]


async def select_events(
    db: AsyncSession,
    client_id: uuid.UUID,
    *,
    level: EventLevel | None,
    since: datetime | None,
    until: datetime | None,
    page: Page,
) -> list[Event]:
    """Newest first by `created_at`; events sharing one keep their stored order.

    `created_at` is when the server received the event. Two server processes
    store their batches independently, so an event received first is not
    always stored first (`seq`): ordering by `created_at` keeps the list in
    step with the `since` and `until` filters.
    """
    conditions: list[ColumnElement[bool]] = [Event.client_id == client_id]
    if level is not None:
        conditions.append(Event.level == level.value)
    if since is not None:
        conditions.append(Event.created_at >= since)
    if until is not None:
        conditions.append(Event.created_at <= until)
    rows = await db.scalars(
        select(Event)
        .where(*conditions)
        .order_by(Event.created_at.desc(), Event.seq.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return list(rows)
