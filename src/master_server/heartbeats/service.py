"""Heartbeats: recorded through the group-commit writer, read back as status.

A heartbeat never opens a session of its own. The request is checked and
queued; the writer authenticates a whole batch of them at once, appends them
to the history with one multi-row statement, counts the pending commands of
the batch's clients, commits, and only then answers. PostgreSQL does all of
it in one statement (see the repository), SQLite in one function on its
driver's thread. A client's presence is its newest heartbeat, read back from
the history.
"""

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
from master_server.core.batching import BatchWriter, HeldConnection, store_batch
from master_server.core.db import Database
from master_server.core.errors import MasterServerError
from master_server.core.limits import dumps_document
from master_server.heartbeats import repository
from master_server.heartbeats.repository import HeartbeatRow, Verdict
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeartbeatRecorded:
    received_at: datetime
    pending_commands: int


HeartbeatOutcome = HeartbeatRecorded | MasterServerError
HeartbeatWriter = BatchWriter[HeartbeatRow, HeartbeatRecorded]


def create_writer(database: Database) -> HeartbeatWriter:
    held = None if database.is_sqlite else HeldConnection(database.engine)

    async def write(rows: Sequence[HeartbeatRow]) -> list[HeartbeatOutcome]:
        return await write_heartbeats(database.engine, rows, held=held)

    return BatchWriter(
        "heartbeats",
        write,
        on_stop=held.close if held else None,
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
    return await writer.submit(
        HeartbeatRow(
            client_id=client_id,
            token_hash=token_hash,
            uptime_s=uptime_s,
            metrics_json=None if metrics is None else dumps_document(metrics),
            received_at=utcnow(),
        )
    )


async def write_heartbeats(
    engine: AsyncEngine,
    rows: Sequence[HeartbeatRow],
    *,
    held: HeldConnection | None = None,
) -> list[HeartbeatOutcome]:
    """Authenticate and store a batch in one transaction of its own.

    One outcome per row, in order. A refused row changes nothing; the rest
    are stored. A client's `last_seen_at`, the newest of its history, only
    ever moves forward. `held` is the writer's own PostgreSQL connection;
    without it one is taken from the pool.
    """
    verdicts = await store_batch(
        engine,
        rows,
        postgresql=repository.store_batch,
        sqlite=repository.store_batch_sqlite,
        held=held,
    )
    return _outcomes(rows, verdicts)


def _outcomes(
    rows: Sequence[HeartbeatRow], verdicts: Sequence[Verdict]
) -> list[HeartbeatOutcome]:
    outcomes: list[HeartbeatOutcome] = []
    for row, verdict in zip(rows, verdicts, strict=True):
        refusal = token_refusal(verdict.owner_id, row.client_id)
        if refusal is not None:
            log.warning(
                "heartbeat.refused", client_id=str(row.client_id), code=refusal.code
            )
            outcomes.append(refusal)
        else:
            outcomes.append(
                HeartbeatRecorded(
                    received_at=row.received_at,
                    pending_commands=verdict.pending_commands,
                )
            )
    return outcomes


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
    registered_at, last_seen_at, uptime_s, metrics = row
    last_heartbeat = (
        None
        if last_seen_at is None
        else {"uptime_s": uptime_s, "metrics": metrics, "received_at": last_seen_at}
    )
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
