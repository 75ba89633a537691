"""Statements for heartbeats, written a batch at a time.

A heartbeat is one row appended to the client's history; its presence
(`last_seen_at`, `last_heartbeat`) is read back from the newest row, so
nothing is rewritten in place.

On PostgreSQL a whole batch is one statement, run on asyncpg (see
`core.batching`): its arrays are unnested into rows, the batch's clients
are share-locked and their tokens compared, the history is appended by a
data-modifying CTE, and the pending commands are counted, all in one round
trip (events share the authenticating part, `accepted_rows_sql`). One
statement is also one transaction, so the writer runs it in autocommit and
needs no BEGIN or COMMIT either. Its text is the same whatever the batch
size, so asyncpg prepares it once.

On SQLite the whole batch runs as one function on the driver's thread (see
`core.batching.run_in_sqlite_thread`), with plain SQL on sqlite3: there an
executemany is a loop in C, with no network in between.
"""

import json
import sqlite3
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from master_server.core.batching import PgConnection, SqliteCodec
from master_server.models import Client, Command, CommandStatus, Heartbeat

PENDING = CommandStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class HeartbeatRow:
    client_id: uuid.UUID
    token_hash: str
    uptime_s: float | None
    metrics_json: str | None  # already serialized
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the batch found for one heartbeat."""

    # The client holding the heartbeat's token, if any. Only a heartbeat whose
    # token is its own client's was stored.
    owner_id: uuid.UUID | None
    pending_commands: int


def accepted_rows_sql(client_ids: str) -> str:
    """The CTEs that authenticate a telemetry batch on PostgreSQL.

    For a statement whose CTE `batch` has `client_id`, `token_hash` and
    `ordinal` columns, and whose parameter `client_ids` holds the batch's
    client ids: `accepted` is the rows whose token is their client's. The
    clients are found by id, as a uuid key is cheaper to look up than a text
    one, and key-share locked: none can be deleted, nor its token replaced,
    before the batch commits. Pair it with `OWNER_ID_SQL`.
    """
    return f"""owners AS (
    SELECT id, token_hash FROM clients
    WHERE id = ANY({client_ids}::uuid[])
    FOR KEY SHARE
),
accepted AS (
    SELECT b.* FROM batch b
    JOIN owners o ON o.id = b.client_id AND o.token_hash = b.token_hash
)"""


# The client holding each row's token, over `batch b LEFT JOIN accepted a ON
# a.ordinal = b.ordinal`: only a refused row looks its token up, to tell an
# unknown token (401) from another client's (404).
OWNER_ID_SQL = """coalesce(
    a.client_id, (SELECT id FROM clients WHERE token_hash = b.token_hash)
)"""


# $1 client ids, $2 token hashes, $3 times of receipt, $4 uptimes, $5 metrics.
_POSTGRESQL_STORE = f"""
WITH batch AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::timestamptz[], $4::float8[], $5::text[]
    ) WITH ORDINALITY
        AS b(client_id, token_hash, received_at, uptime_s, metrics, ordinal)
),
{accepted_rows_sql("$1")},
stored AS (
    INSERT INTO heartbeats (client_id, uptime_s, metrics, created_at)
    SELECT client_id, uptime_s, CAST(metrics AS jsonb), received_at
    FROM accepted
    ORDER BY ordinal
),
pending AS (
    SELECT client_id, count(*) AS commands FROM commands
    WHERE client_id IN (SELECT client_id FROM accepted) AND status = '{PENDING}'
    GROUP BY client_id
)
SELECT {OWNER_ID_SQL} AS owner_id, coalesce(p.commands, 0) AS pending_commands
FROM batch b
LEFT JOIN accepted a ON a.ordinal = b.ordinal
LEFT JOIN pending p ON p.client_id = b.client_id
ORDER BY b.ordinal
"""


async def store_batch(db: PgConnection, rows: Sequence[HeartbeatRow]) -> list[Verdict]:
    """Authenticate and store a batch on PostgreSQL; one verdict per row, in order.

    A row is stored, in the client's history, when its token belongs to its
    client.
    """
    records = await db.fetch(
        _POSTGRESQL_STORE,
        [row.client_id for row in rows],
        [row.token_hash for row in rows],
        [row.received_at for row in rows],
        [row.uptime_s for row in rows],
        [row.metrics_json for row in rows],
    )
    return [Verdict(owner_id, pending) for owner_id, pending in records]


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
) -> Row[datetime | None, datetime | None, float | None, dict[str, Any] | None] | None:
    """The client's `registered_at` and its newest heartbeat, if it has one.

    None when there is no such client. Newest means the latest received; of
    two received in the same microsecond, the one stored last.
    """
    newest = (
        select(Heartbeat.created_at, Heartbeat.uptime_s, Heartbeat.metrics)
        .where(Heartbeat.client_id == client_id)
        .order_by(Heartbeat.created_at.desc(), Heartbeat.seq.desc())
        .limit(1)
        .subquery()
    )
    row = (
        await conn.execute(
            select(
                Client.registered_at,
                newest.c.created_at,
                newest.c.uptime_s,
                newest.c.metrics,
            )
            .outerjoin(newest, true())
            .where(Client.id == client_id)
        )
    ).first()
    return row


# SQLite: the same steps by hand, run on sqlite3 in the driver's thread.
# Lists travel as one JSON array parameter, read back with json_each.

_SQLITE_TOKEN_OWNERS = """
SELECT token_hash, id FROM clients
WHERE token_hash IN (SELECT value FROM json_each(?))
"""

_SQLITE_INSERT_HEARTBEATS = """
INSERT INTO heartbeats (client_id, uptime_s, metrics, created_at)
VALUES (?, ?, ?, ?)
"""

_SQLITE_PENDING_COMMANDS = f"""
SELECT client_id, count(*) FROM commands
WHERE status = '{PENDING}' AND client_id IN (SELECT value FROM json_each(?))
GROUP BY client_id
"""


def token_owners_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, token_hashes: Collection[str]
) -> dict[str, uuid.UUID]:
    """The client id behind each known token hash."""
    rows = db.execute(_SQLITE_TOKEN_OWNERS, (json.dumps(list(token_hashes)),))
    return {token_hash: codec.from_id(client_id) for token_hash, client_id in rows}


def store_batch_sqlite(
    db: sqlite3.Connection, codec: SqliteCodec, rows: Sequence[HeartbeatRow]
) -> list[Verdict]:
    """`store_batch` for SQLite, in a transaction of its own.

    BEGIN IMMEDIATE takes the write lock before the first read, so another
    process writing the same file makes this wait (busy timeout) rather than
    fail halfway.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        owners = token_owners_sqlite(db, codec, {row.token_hash for row in rows})
        accepted = [row for row in rows if owners.get(row.token_hash) == row.client_id]
        pending: dict[uuid.UUID, int] = {}
        if accepted:
            db.executemany(
                _SQLITE_INSERT_HEARTBEATS,
                [
                    (
                        codec.to_id(row.client_id),
                        row.uptime_s,
                        row.metrics_json,
                        codec.to_time(row.received_at),
                    )
                    for row in accepted
                ],
            )
            ids = json.dumps(sorted({codec.to_id(row.client_id) for row in accepted}))
            pending = {
                codec.from_id(client_id): count
                for client_id, count in db.execute(_SQLITE_PENDING_COMMANDS, (ids,))
            }
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return [
        Verdict(owners.get(row.token_hash), pending.get(row.client_id, 0))
        for row in rows
    ]
