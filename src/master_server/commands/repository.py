"""Core statements for commands: polls and acks are hot paths, so no ORM here.

Every function runs on the connection of the request's unit of work, so its
changes commit (or roll back) with the request.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from master_server.models import Command, CommandStatus

# Everything a Command response shows, plus `seq` to order what a poll returns.
_COLUMNS = (
    Command.seq,
    Command.id,
    Command.client_id,
    Command.command,
    Command.payload,
    Command.status,
    Command.created_by,
    Command.created_at,
    Command.sent_at,
    Command.acked_at,
    Command.result,
)


async def insert_command(
    connection: AsyncConnection,
    *,
    client_id: uuid.UUID,
    command: str,
    payload: dict[str, Any] | None,
    created_by: uuid.UUID,
    now: datetime,
) -> RowMapping:
    result = await connection.execute(
        insert(Command)
        .values(
            id=uuid.uuid4(),
            client_id=client_id,
            command=command,
            payload=payload,
            status=CommandStatus.PENDING.value,
            created_by=created_by,
            created_at=now,
        )
        .returning(*_COLUMNS)
    )
    return result.mappings().one()


# Creation order: the server's time of the request, then the order stored.
_OLDEST_FIRST = (Command.created_at, Command.seq)
_NEWEST_FIRST = (Command.created_at.desc(), Command.seq.desc())


async def select_commands(
    connection: AsyncConnection,
    client_id: uuid.UUID,
    *,
    status: CommandStatus | None,
    limit: int,
    offset: int,
) -> Sequence[RowMapping]:
    query = select(*_COLUMNS).where(Command.client_id == client_id)
    if status is not None:
        query = query.where(Command.status == status.value)
    result = await connection.execute(
        query.order_by(*_NEWEST_FIRST).limit(limit).offset(offset)
    )
    return result.mappings().all()


async def claim_pending(
    connection: AsyncConnection, client_id: uuid.UUID, *, limit: int, now: datetime
) -> list[RowMapping]:
    """Mark up to `limit` of the oldest pending commands sent and return them.

    On PostgreSQL the rows are picked with FOR UPDATE SKIP LOCKED, so a
    concurrent poll skips the rows this one holds instead of waiting for them
    and then handing them out again; a row another poll already committed as
    sent no longer matches `status = 'pending'` when it is locked. On SQLite
    one writer runs at a time, and the app funnels everything through one
    connection, so the single UPDATE is atomic without row locks.
    """
    picked = (
        select(Command.seq)
        .where(
            Command.client_id == client_id,
            Command.status == CommandStatus.PENDING.value,
        )
        .order_by(*_OLDEST_FIRST)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        # Materialized, so the locking SELECT runs once. As a plain
        # `IN (subquery)` the planner may rescan it per row, and each rescan
        # skips the rows this statement has already updated and locks the
        # next `limit` ones: one poll could take every pending command.
        locked = (
            picked.with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        chosen = Command.seq.in_(select(locked.c.seq))
    else:
        chosen = Command.seq.in_(picked.scalar_subquery())

    result = await connection.execute(
        update(Command)
        .where(
            chosen,
            Command.status == CommandStatus.PENDING.value,
        )
        .values(status=CommandStatus.SENT.value, sent_at=now)
        .returning(*_COLUMNS)
    )
    # RETURNING gives no order; the poll answers oldest first.
    return sorted(
        result.mappings().all(), key=lambda row: (row["created_at"], row["seq"])
    )


async def finish_sent(
    connection: AsyncConnection,
    client_id: uuid.UUID,
    command_id: uuid.UUID,
    *,
    status: CommandStatus,
    result: Any,
    now: datetime,
) -> RowMapping | None:
    """Move a sent command to `status`; None when it was not in `sent`."""
    updated = await connection.execute(
        update(Command)
        .where(
            Command.id == command_id,
            Command.client_id == client_id,
            Command.status == CommandStatus.SENT.value,
        )
        .values(status=status.value, result=result, acked_at=now)
        .returning(*_COLUMNS)
    )
    return updated.mappings().one_or_none()


async def find_command(
    connection: AsyncConnection, client_id: uuid.UUID, command_id: uuid.UUID
) -> RowMapping | None:
    found = await connection.execute(
        select(*_COLUMNS).where(
            Command.id == command_id, Command.client_id == client_id
        )
    )
    return found.mappings().one_or_none()
