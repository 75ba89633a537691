"""Events: ingested through the group-commit writer, listed newest first."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from master_server.core.batching import BatchWriter, HeldConnection, store_batch
from master_server.core.db import Database
from master_server.core.deps import Page
from master_server.core.errors import MasterServerError
from master_server.core.limits import dumps_document
from master_server.events import repository
from master_server.events.repository import EventRow
from master_server.heartbeats.service import token_refusal
from master_server.models import Event, EventLevel
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EventItem:
    """An event waiting for its batch; the token is checked in the batch."""

    row: EventRow
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as just stored: the fields of `Event`, without the ORM's cost."""

    id: uuid.UUID
    client_id: uuid.UUID
    level: str
    message: str
    data: dict[str, Any] | None
    created_at: datetime


EventOutcome = StoredEvent | MasterServerError
EventWriter = BatchWriter[EventItem, StoredEvent]


def create_writer(database: Database) -> EventWriter:
    held = None if database.is_sqlite else HeldConnection(database.engine)

    async def write(items: Sequence[EventItem]) -> list[EventOutcome]:
        return await write_events(database.engine, items, held=held)

    return BatchWriter(
        "events",
        write,
        on_stop=held.close if held else None,
    )


async def record_event(
    writer: EventWriter,
    *,
    client_id: uuid.UUID,
    token_hash: str,
    level: EventLevel,
    message: str,
    data: dict[str, Any] | None,
) -> StoredEvent:
    """Store an event; returns it once committed.

    Raises InvalidToken for a token no client holds, ClientNotFound when the
    token is another client's, and WriteFailed when the batch did not commit.
    """
    row = EventRow(
        id=uuid.uuid4(),
        client_id=client_id,
        token_hash=token_hash,
        level=level.value,
        message=message,
        data_json=None if data is None else dumps_document(data),
        created_at=utcnow(),
    )
    return await writer.submit(EventItem(row=row, data=data))


async def write_events(
    engine: AsyncEngine,
    items: Sequence[EventItem],
    *,
    held: HeldConnection | None = None,
) -> list[EventOutcome]:
    """Authenticate and store a batch, in order, in one transaction of its own."""
    rows = [item.row for item in items]
    owners = await store_batch(
        engine,
        rows,
        postgresql=repository.store_batch,
        sqlite=repository.store_batch_sqlite,
        held=held,
    )

    outcomes: list[EventOutcome] = []
    for item, owner_id in zip(items, owners, strict=True):
        refusal = token_refusal(owner_id, item.row.client_id)
        if refusal is not None:
            log.warning(
                "event.refused", client_id=str(item.row.client_id), code=refusal.code
            )
            outcomes.append(refusal)
        else:
            outcomes.append(_stored_event(item))
    return outcomes


def _stored_event(item: EventItem) -> StoredEvent:
    row = item.row
    return StoredEvent(
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
