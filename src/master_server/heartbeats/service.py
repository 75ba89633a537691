"""Heartbeats: recorded through the group-commit writer, read back as status.

A heartbeat never opens a session of its own. The request is checked and
queued; the writer authenticates a whole batch of them with one query, stores
them with one UPDATE of `clients` and one INSERT into `heartbeats`, counts the
pending commands of the batch's clients, commits, and only then answers. The
steps are the same on both databases; PostgreSQL runs them through SQLAlchemy
Core, SQLite as one function on its driver's thread.
"""

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from master_server.auth.errors import InvalidToken
from master_server.clients.errors import ClientNotFound
from master_server.clients.presence import ClientStatus, presence
from master_server.core.batching import (
    BatchWriter,
    SqliteCodec,
    run_in_sqlite_thread,
)
from master_server.core.db import Database
from master_server.core.errors import MasterServerError
from master_server.core.limits import dumps_document
from master_server.heartbeats import repository
from master_server.heartbeats.repository import HeartbeatRow
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)

MAX_BATCH_SIZE = 500
MAX_BATCH_DELAY_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class HeartbeatItem:
    """A heartbeat waiting for its batch; the token is checked in the batch."""

    client_id: uuid.UUID
    token_hash: str
    row: HeartbeatRow


@dataclass(frozen=True, slots=True)
class HeartbeatRecorded:
    received_at: datetime
    pending_commands: int


HeartbeatWriter = BatchWriter[HeartbeatItem, HeartbeatRecorded]


def create_writer(database: Database) -> HeartbeatWriter:
    async def write(
        items: Sequence[HeartbeatItem],
    ) -> list[HeartbeatRecorded | MasterServerError]:
        return await write_heartbeats(database.engine, items)

    return BatchWriter(
        "heartbeats",
        write,
        max_batch_size=MAX_BATCH_SIZE,
        max_delay_seconds=MAX_BATCH_DELAY_SECONDS,
    )


async def record_heartbeat(
    writer: HeartbeatWriter,
    *,
    client_id: uuid.UUID,
    token_hash: str,
    uptime_s: float | None,
    metrics: dict[str, Any] | None,
) -> HeartbeatRecorded:
    """Store a heartbeat; returns once it is committed.

    Raises InvalidToken for a token no client holds, ClientNotFound when the
    token is another client's, and WriteFailed when the batch did not commit.
    """
    received_at = utcnow()
    last_heartbeat = {
        "uptime_s": uptime_s,
        "metrics": metrics,
        "received_at": received_at.isoformat().replace("+00:00", "Z"),
    }
    row = HeartbeatRow(
        client_id=client_id,
        uptime_s=uptime_s,
        metrics_json=None if metrics is None else dumps_document(metrics),
        last_heartbeat_json=dumps_document(last_heartbeat),
        received_at=received_at,
    )
    return await writer.submit(
        HeartbeatItem(client_id=client_id, token_hash=token_hash, row=row)
    )


async def write_heartbeats(
    engine: AsyncEngine, items: Sequence[HeartbeatItem]
) -> list[HeartbeatRecorded | MasterServerError]:
    """Authenticate and store a batch in one transaction of its own.

    One outcome per item, in order. A refused item changes nothing; the rest
    are stored. A client's `last_seen_at` only ever moves forward.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            codec = SqliteCodec.of(conn.dialect)
            outcomes = await run_in_sqlite_thread(
                conn, lambda db: _store_sqlite(db, codec, items)
            )
        else:
            async with conn.begin():
                outcomes = await store_heartbeats(conn, items)

    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, MasterServerError):
            log.warning(
                "heartbeat.refused", client_id=str(item.client_id), code=outcome.code
            )
    return outcomes


async def store_heartbeats(
    conn: AsyncConnection, items: Sequence[HeartbeatItem]
) -> list[HeartbeatRecorded | MasterServerError]:
    """The PostgreSQL batch, in the caller's transaction."""
    owners = await repository.lock_token_owners(
        conn, {item.token_hash for item in items}, for_update=True
    )
    refusals, accepted = _authenticate(items, owners)

    pending: dict[uuid.UUID, int] = {}
    if accepted:
        await repository.update_clients(conn, _latest_per_client(accepted))
        await repository.insert_heartbeats(conn, accepted)
        pending = await repository.count_pending_commands(
            conn, {row.client_id for row in accepted}
        )
    return _outcomes(items, refusals, pending)


def _store_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, items: Sequence[HeartbeatItem]
) -> list[HeartbeatRecorded | MasterServerError]:
    """The SQLite batch, on the driver's thread, in a transaction of its own.

    BEGIN IMMEDIATE takes the write lock before the first read, so another
    process writing the same file makes this wait (busy timeout) rather than
    fail halfway.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        owners = repository.token_owners_sqlite(
            db, codec, {item.token_hash for item in items}
        )
        refusals, accepted = _authenticate(items, owners)

        pending: dict[uuid.UUID, int] = {}
        if accepted:
            repository.update_clients_sqlite(db, codec, _latest_per_client(accepted))
            repository.insert_heartbeats_sqlite(db, codec, accepted)
            pending = repository.count_pending_commands_sqlite(
                db, codec, {row.client_id for row in accepted}
            )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return _outcomes(items, refusals, pending)


def _authenticate(
    items: Sequence[HeartbeatItem], owners: dict[str, uuid.UUID]
) -> tuple[list[MasterServerError | None], list[HeartbeatRow]]:
    """Each item's refusal (None when accepted), and the rows to store."""
    refusals = [
        token_refusal(owners.get(item.token_hash), item.client_id) for item in items
    ]
    accepted = [
        item.row
        for item, refusal in zip(items, refusals, strict=True)
        if refusal is None
    ]
    return refusals, accepted


def _outcomes(
    items: Sequence[HeartbeatItem],
    refusals: Sequence[MasterServerError | None],
    pending: dict[uuid.UUID, int],
) -> list[HeartbeatRecorded | MasterServerError]:
    return [
        refusal
        or HeartbeatRecorded(
            received_at=item.row.received_at,
            pending_commands=pending.get(item.client_id, 0),
        )
        for item, refusal in zip(items, refusals, strict=True)
    ]


def token_refusal(
    owner_id: uuid.UUID | None, client_id: uuid.UUID
) -> MasterServerError | None:
    """Why a client token may not write to `client_id`'s telemetry, if it may not.

    The same answers as the per-request check: an unknown (or revoked, or
    deleted client's) token is a 401, another client's id a 404.
    """
    if owner_id is None:
        return InvalidToken()
    if owner_id != client_id:
        return ClientNotFound()
    return None


def _latest_per_client(rows: Sequence[HeartbeatRow]) -> list[HeartbeatRow]:
    latest: dict[uuid.UUID, HeartbeatRow] = {}
    for row in rows:
        current = latest.get(row.client_id)
        if current is None or row.received_at >= current.received_at:
            latest[row.client_id] = row
    return [latest[client_id] for client_id in sorted(latest)]


@dataclass(frozen=True, slots=True)
class ClientStatusReport:
    client_id: uuid.UUID
    status: ClientStatus
    last_seen_at: datetime | None
    last_heartbeat: dict[str, Any] | None
    pending_commands: int


async def get_status(
    db: AsyncSession | AsyncConnection,
    client_id: uuid.UUID,
    *,
    timeout_seconds: int,
) -> ClientStatusReport:
    """The client's presence by the server's clock, and its latest heartbeat."""
    row = await repository.client_status_row(db, client_id)
    if row is None:
        raise ClientNotFound
    registered_at, last_seen_at, last_heartbeat = row
    pending = await repository.count_pending_commands(db, [client_id])

    return ClientStatusReport(
        client_id=client_id,
        status=presence(
            registered_at,
            last_seen_at,
            now=utcnow(),
            timeout_seconds=timeout_seconds,
        ),
        last_seen_at=last_seen_at,
        last_heartbeat=last_heartbeat,
        pending_commands=pending.get(client_id, 0),
    )
