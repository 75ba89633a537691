"""Events: ingested through the group-commit writer, listed newest first."""

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from master_server.core.batching import (
    BatchWriter,
    SqliteCodec,
    run_in_sqlite_thread,
)
from master_server.core.db import Database
from master_server.core.deps import Page
from master_server.core.errors import MasterServerError
from master_server.core.limits import dumps_document
from master_server.events import repository
from master_server.events.repository import EventRow
from master_server.heartbeats import repository as heartbeat_repository
from master_server.heartbeats.service import token_refusal
from master_server.models import Event, EventLevel
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)

MAX_BATCH_SIZE = 500
MAX_BATCH_DELAY_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class EventItem:
    """An event waiting for its batch; the token is checked in the batch."""

    token_hash: str
    row: EventRow
    data: dict[str, Any] | None


EventWriter = BatchWriter[EventItem, Event]


def create_writer(database: Database) -> EventWriter:
    async def write(items: Sequence[EventItem]) -> list[Event | MasterServerError]:
        return await write_events(database.engine, items)

    return BatchWriter(
        "events",
        write,
        max_batch_size=MAX_BATCH_SIZE,
        max_delay_seconds=MAX_BATCH_DELAY_SECONDS,
    )


async def record_event(
    writer: EventWriter,
    *,
    client_id: uuid.UUID,
    token_hash: str,
    level: EventLevel,
    message: str,
    data: dict[str, Any] | None,
) -> Event:
    """Store an event; returns it once committed.

    Raises InvalidToken for a token no client holds, ClientNotFound when the
    token is another client's, and WriteFailed when the batch did not commit.
    """
    row = EventRow(
        id=uuid.uuid4(),
        client_id=client_id,
        level=level.value,
        message=message,
        data_json=None if data is None else dumps_document(data),
        created_at=utcnow(),
    )
    return await writer.submit(EventItem(token_hash=token_hash, row=row, data=data))


async def write_events(
    engine: AsyncEngine, items: Sequence[EventItem]
) -> list[Event | MasterServerError]:
    """Authenticate and store a batch, in order, in one transaction of its own."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            codec = SqliteCodec.of(conn.dialect)
            outcomes = await run_in_sqlite_thread(
                conn, lambda db: _store_sqlite(db, codec, items)
            )
        else:
            async with conn.begin():
                outcomes = await store_events(conn, items)

    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, MasterServerError):
            log.warning(
                "event.refused", client_id=str(item.row.client_id), code=outcome.code
            )
    return outcomes


async def store_events(
    conn: AsyncConnection, items: Sequence[EventItem]
) -> list[Event | MasterServerError]:
    """The PostgreSQL batch, in the caller's transaction."""
    owners = await heartbeat_repository.lock_token_owners(
        conn, {item.token_hash for item in items}, for_update=False
    )
    refusals, accepted = _authenticate(items, owners)
    if accepted:
        await repository.insert_events(conn, accepted)
    return _outcomes(items, refusals)


def _store_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, items: Sequence[EventItem]
) -> list[Event | MasterServerError]:
    """The SQLite batch, on the driver's thread (see heartbeats' twin)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        owners = heartbeat_repository.token_owners_sqlite(
            db, codec, {item.token_hash for item in items}
        )
        refusals, accepted = _authenticate(items, owners)
        if accepted:
            repository.insert_events_sqlite(db, codec, accepted)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return _outcomes(items, refusals)


def _authenticate(
    items: Sequence[EventItem], owners: dict[str, uuid.UUID]
) -> tuple[list[MasterServerError | None], list[EventRow]]:
    refusals = [
        token_refusal(owners.get(item.token_hash), item.row.client_id) for item in items
    ]
    accepted = [
        item.row
        for item, refusal in zip(items, refusals, strict=True)
        if refusal is None
    ]
    return refusals, accepted


def _outcomes(
    items: Sequence[EventItem], refusals: Sequence[MasterServerError | None]
) -> list[Event | MasterServerError]:
    return [
        refusal or _stored_event(item)
        for item, refusal in zip(items, refusals, strict=True)
    ]


def _stored_event(item: EventItem) -> Event:
    row = item.row
    return Event(
        id=row.id,
        client_id=row.client_id,
        level=row.level,
        message=row.message,
        data=item.data,
        created_at=row.created_at,
    )


async def list_events(
    db: AsyncSession,
    client_id: uuid.UUID,
    *,
    level: EventLevel | None,
    since: datetime | None,
    until: datetime | None,
    page: Page,
) -> list[Event]:
    """The client's events, newest first; `since` and `until` are inclusive."""
    return await repository.select_events(
        db, client_id, level=level, since=since, until=until, page=page
    )
