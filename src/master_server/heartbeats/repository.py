"""Statements for heartbeats, written a batch at a time.

PostgreSQL gets each batch as arrays unnested into rows: one statement text
whatever the batch size, so asyncpg prepares it once, and one round trip per
statement. On SQLite the whole batch runs as one function on the driver's
thread (see `core.batching.run_in_sqlite_thread`), with plain SQL on sqlite3:
an executemany there is a loop in C, with no network in between.
"""

import json
import sqlite3
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Row,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from master_server.core.batching import SqliteCodec
from master_server.models import Client, Command, CommandStatus, Heartbeat
from master_server.models.base import UTCDateTime


@dataclass(frozen=True, slots=True)
class HeartbeatRow:
    client_id: uuid.UUID
    uptime_s: float | None
    metrics_json: str | None  # already serialized
    last_heartbeat_json: str
    received_at: datetime


async def lock_token_owners(
    conn: AsyncConnection, token_hashes: Collection[str], *, for_update: bool
) -> dict[str, uuid.UUID]:
    """The client id behind each known token hash, with the clients' rows locked.

    Rows are locked in id order: for an update (`for_update`) so that two
    batches touching the same clients, in two workers, queue behind each
    other instead of deadlocking; otherwise with a key-share lock, which keeps
    the clients from being deleted until the batch commits.
    """
    statement = (
        select(Client.id, Client.token_hash)
        .where(Client.token_hash.in_(sorted(token_hashes)))
        .order_by(Client.id)
        .with_for_update(key_share=True, read=not for_update)
    )
    rows = await conn.execute(statement)
    return {row.token_hash: row.id for row in rows}


def _is_newer(received_at: ColumnElement[Any]) -> ColumnElement[bool]:
    # last_seen_at only moves forward, whatever order batches commit in.
    return or_(Client.last_seen_at.is_(None), Client.last_seen_at <= received_at)


def _update_clients_statement_postgresql() -> Any:
    rows = (
        func.unnest(
            bindparam("ids", type_=ARRAY(Uuid())),
            bindparam("received_ats", type_=ARRAY(UTCDateTime())),
            bindparam("last_heartbeats", type_=ARRAY(Text())),
        )
        .table_valued(
            column("id", Uuid()),
            column("received_at", UTCDateTime()),
            column("last_heartbeat", Text()),
        )
        .render_derived(name="v")
    )
    is_newer = _is_newer(rows.c.received_at)
    return (
        update(Client)
        .where(Client.id == rows.c.id)
        .values(
            last_seen_at=case(
                (is_newer, rows.c.received_at), else_=Client.last_seen_at
            ),
            last_heartbeat=case(
                (is_newer, cast(rows.c.last_heartbeat, JSONB)),
                else_=Client.last_heartbeat,
            ),
        )
    )


def _insert_heartbeats_statement_postgresql() -> Any:
    rows = (
        func.unnest(
            bindparam("client_ids", type_=ARRAY(Uuid())),
            bindparam("uptimes", type_=ARRAY(Float())),
            bindparam("metrics", type_=ARRAY(Text())),
            bindparam("created_ats", type_=ARRAY(UTCDateTime())),
        )
        .table_valued(
            column("client_id", Uuid()),
            column("uptime_s", Float()),
            column("metrics", Text()),
            column("created_at", UTCDateTime()),
            with_ordinality="ordinal",
        )
        .render_derived(name="v")
    )
    return insert(Heartbeat).from_select(
        ["client_id", "uptime_s", "metrics", "created_at"],
        select(
            rows.c.client_id,
            rows.c.uptime_s,
            cast(rows.c.metrics, JSONB),
            rows.c.created_at,
        ).order_by(rows.c.ordinal),
    )


_UPDATE_CLIENTS_POSTGRESQL = _update_clients_statement_postgresql()
_INSERT_HEARTBEATS_POSTGRESQL = _insert_heartbeats_statement_postgresql()


async def update_clients(conn: AsyncConnection, latest: Sequence[HeartbeatRow]) -> None:
    """Set each client's `last_seen_at` and `last_heartbeat`, one row per client."""
    await conn.execute(
        _UPDATE_CLIENTS_POSTGRESQL,
        {
            "ids": [row.client_id for row in latest],
            "received_ats": [row.received_at for row in latest],
            "last_heartbeats": [row.last_heartbeat_json for row in latest],
        },
    )


async def insert_heartbeats(
    conn: AsyncConnection, rows: Sequence[HeartbeatRow]
) -> None:
    """Append every heartbeat to the history, in arrival order."""
    await conn.execute(
        _INSERT_HEARTBEATS_POSTGRESQL,
        {
            "client_ids": [row.client_id for row in rows],
            "uptimes": [row.uptime_s for row in rows],
            "metrics": [row.metrics_json for row in rows],
            "created_ats": [row.received_at for row in rows],
        },
    )


async def count_pending_commands(
    conn: AsyncConnection | AsyncSession, client_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many commands wait for each client's poll; absent means none."""
    rows: Sequence[Row[uuid.UUID, int]] = (
        await conn.execute(
            select(Command.client_id, func.count())
            .where(
                Command.client_id.in_(sorted(client_ids)),
                Command.status == CommandStatus.PENDING.value,
            )
            .group_by(Command.client_id)
        )
    ).all()
    return {client_id: count for client_id, count in rows}


async def client_status_row(
    conn: AsyncConnection | AsyncSession, client_id: uuid.UUID
) -> Row[datetime | None, datetime | None, dict[str, Any] | None] | None:
    row = (
        await conn.execute(
            select(
                Client.registered_at, Client.last_seen_at, Client.last_heartbeat
            ).where(Client.id == client_id)
        )
    ).first()
    return row


# SQLite: the same statements by hand, run on sqlite3 in the driver's thread.
# Lists travel as one JSON array parameter, read back with json_each.

_SQLITE_TOKEN_OWNERS = """
SELECT token_hash, id FROM clients
WHERE token_hash IN (SELECT value FROM json_each(?))
"""

_SQLITE_UPDATE_CLIENTS = """
UPDATE clients SET
    last_heartbeat = CASE
        WHEN last_seen_at IS NULL OR last_seen_at <= :received_at
        THEN :last_heartbeat ELSE last_heartbeat END,
    last_seen_at = CASE
        WHEN last_seen_at IS NULL OR last_seen_at <= :received_at
        THEN :received_at ELSE last_seen_at END
WHERE id = :id
"""

_SQLITE_INSERT_HEARTBEATS = """
INSERT INTO heartbeats (client_id, uptime_s, metrics, created_at)
VALUES (?, ?, ?, ?)
"""

_SQLITE_PENDING_COMMANDS = f"""
SELECT client_id, count(*) FROM commands
WHERE status = '{CommandStatus.PENDING.value}'
    AND client_id IN (SELECT value FROM json_each(?))
GROUP BY client_id
"""


def token_owners_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, token_hashes: Collection[str]
) -> dict[str, uuid.UUID]:
    """The client id behind each known token hash (SQLite has one writer)."""
    rows = db.execute(_SQLITE_TOKEN_OWNERS, (json.dumps(list(token_hashes)),))
    return {token_hash: codec.from_id(client_id) for token_hash, client_id in rows}


def update_clients_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, latest: Sequence[HeartbeatRow]
) -> None:
    db.executemany(
        _SQLITE_UPDATE_CLIENTS,
        [
            {
                "id": codec.to_id(row.client_id),
                "received_at": codec.to_time(row.received_at),
                "last_heartbeat": row.last_heartbeat_json,
            }
            for row in latest
        ],
    )


def insert_heartbeats_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, rows: Sequence[HeartbeatRow]
) -> None:
    db.executemany(
        _SQLITE_INSERT_HEARTBEATS,
        [
            (
                codec.to_id(row.client_id),
                row.uptime_s,
                row.metrics_json,
                codec.to_time(row.received_at),
            )
            for row in rows
        ],
    )


def count_pending_commands_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, client_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    ids = json.dumps([codec.to_id(client_id) for client_id in client_ids])
    rows = db.execute(_SQLITE_PENDING_COMMANDS, (ids,))
    return {codec.from_id(client_id): count for client_id, count in rows}
