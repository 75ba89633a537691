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

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from master_server.core.batching import SqliteCodec
from master_server.core.deps import Page
from master_server.heartbeats.repository import token_owners_sqlite
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


_POSTGRESQL_STORE = text(
    """
WITH batch AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]),
        CAST(:client_ids AS uuid[]),
        CAST(:token_hashes AS text[]),
        CAST(:levels AS text[]),
        CAST(:messages AS text[]),
        CAST(:datas AS text[]),
        CAST(:created_ats AS timestamptz[])
    ) WITH ORDINALITY AS b(
        id, client_id, token_hash, level, message, data, created_at, ordinal
    )
),
owners AS (
    -- A key-share lock: no client can be deleted before the batch commits.
    SELECT id, token_hash FROM clients
    WHERE token_hash = ANY(CAST(:token_hashes AS text[]))
    FOR KEY SHARE
),
stored AS (
    INSERT INTO events (id, client_id, level, message, data, created_at)
    SELECT b.id, b.client_id, b.level, b.message, CAST(b.data AS jsonb),
        b.created_at
    FROM batch b
    JOIN owners o ON o.id = b.client_id AND o.token_hash = b.token_hash
    ORDER BY b.ordinal
)
SELECT o.id AS owner_id
FROM batch b
LEFT JOIN owners o ON o.token_hash = b.token_hash
ORDER BY b.ordinal
"""
)


async def store_batch(
    conn: AsyncConnection, rows: Sequence[EventRow]
) -> list[uuid.UUID | None]:
    """Store the rows whose token is their client's, on PostgreSQL.

    Returns, per row and in order, the client holding its token, if any.
    """
    result = await conn.execute(
        _POSTGRESQL_STORE,
        {
            "ids": [row.id for row in rows],
            "client_ids": [row.client_id for row in rows],
            "token_hashes": [row.token_hash for row in rows],
            "levels": [row.level for row in rows],
            "messages": [row.message for row in rows],
            "datas": [row.data_json for row in rows],
            "created_ats": [row.created_at for row in rows],
        },
    )
    return [owner_id for (owner_id,) in result]


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
    """Newest first by `seq`: events sharing a `created_at` keep their order."""
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
        .order_by(Event.seq.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return list(rows)
