"""Statements for events: batched inserts and the newest-first query.

As for heartbeats, PostgreSQL gets a batch as unnested arrays (one statement
text, prepared once) and SQLite an executemany on sqlite3, in the driver's
thread. Rows are inserted in the order given, so `seq` follows arrival order
within a batch as across them.
"""

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from master_server.core.batching import SqliteCodec
from master_server.core.deps import Page
from master_server.models import Event, EventLevel
from master_server.models.base import UTCDateTime


@dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    client_id: uuid.UUID
    level: str
    message: str
    data_json: str | None  # already serialized
    created_at: datetime


def _insert_statement_postgresql() -> Any:
    rows = (
        func.unnest(
            bindparam("ids", type_=ARRAY(Uuid())),
            bindparam("client_ids", type_=ARRAY(Uuid())),
            bindparam("levels", type_=ARRAY(String())),
            bindparam("messages", type_=ARRAY(Text())),
            bindparam("datas", type_=ARRAY(Text())),
            bindparam("created_ats", type_=ARRAY(UTCDateTime())),
        )
        .table_valued(
            column("id", Uuid()),
            column("client_id", Uuid()),
            column("level", String()),
            column("message", Text()),
            column("data", Text()),
            column("created_at", UTCDateTime()),
            with_ordinality="ordinal",
        )
        .render_derived(name="v")
    )
    return insert(Event).from_select(
        ["id", "client_id", "level", "message", "data", "created_at"],
        select(
            rows.c.id,
            rows.c.client_id,
            rows.c.level,
            rows.c.message,
            cast(rows.c.data, JSONB),
            rows.c.created_at,
        ).order_by(rows.c.ordinal),  # seq in arrival order
    )


_INSERT_POSTGRESQL = _insert_statement_postgresql()


async def insert_events(conn: AsyncConnection, rows: Sequence[EventRow]) -> None:
    await conn.execute(
        _INSERT_POSTGRESQL,
        {
            "ids": [row.id for row in rows],
            "client_ids": [row.client_id for row in rows],
            "levels": [row.level for row in rows],
            "messages": [row.message for row in rows],
            "datas": [row.data_json for row in rows],
            "created_ats": [row.created_at for row in rows],
        },
    )


_SQLITE_INSERT = """
INSERT INTO events (id, client_id, level, message, data, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""


def insert_events_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, rows: Sequence[EventRow]
) -> None:
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
        ],
    )


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
