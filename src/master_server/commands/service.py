"""Commands: enqueued by users, handed out once by polls, acknowledged by clients.

A command's status only moves forward (see `CommandStatus`); each transition is
one conditional UPDATE, so concurrent polls and acks cannot move it twice.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.clients.errors import ClientNotFound
from master_server.commands import repository
from master_server.commands.errors import (
    CommandAlreadyAcknowledged,
    CommandNotFound,
    CommandNotSent,
)
from master_server.core.deps import Page
from master_server.models import CommandStatus
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)


async def enqueue(
    db: AsyncSession,
    client_id: uuid.UUID,
    *,
    command: str,
    payload: dict[str, Any] | None,
    created_by: uuid.UUID,
) -> RowMapping:
    connection = await db.connection()
    try:
        row = await repository.insert_command(
            connection,
            client_id=client_id,
            command=command,
            payload=payload,
            created_by=created_by,
            now=utcnow(),
        )
    except IntegrityError:
        # The client was deleted since its visibility was checked.
        raise ClientNotFound from None

    log.info(
        "command.enqueued",
        client_id=str(client_id),
        command_id=str(row["id"]),
        command=command,
        created_by=str(created_by),
    )
    return row


async def list_commands(
    db: AsyncSession,
    client_id: uuid.UUID,
    *,
    status: CommandStatus | None,
    page: Page,
) -> Sequence[RowMapping]:
    """The client's commands, newest first; reading changes nothing."""
    return await repository.select_commands(
        await db.connection(),
        client_id,
        status=status,
        limit=page.limit,
        offset=page.offset,
    )


async def deliver_pending(
    db: AsyncSession, client_id: uuid.UUID, *, limit: int
) -> list[RowMapping]:
    """The client's pending commands, oldest first, each now marked sent.

    A command is handed out by exactly one poll, even when polls race; a
    command whose poll answer is lost stays `sent` and is not handed out again.
    """
    rows = await repository.claim_pending(
        await db.connection(), client_id, limit=limit, now=utcnow()
    )
    if rows:
        log.info(
            "command.sent",
            client_id=str(client_id),
            command_ids=[str(row["id"]) for row in rows],
        )
    return rows


async def acknowledge(
    db: AsyncSession,
    client_id: uuid.UUID,
    command_id: uuid.UUID,
    *,
    status: CommandStatus,
    result: Any,
) -> RowMapping:
    """Record the client's outcome for a sent command.

    The same ack repeated is answered with the command unchanged (its first
    result kept); a different status on a finished command, or any ack of a
    command that was never handed out, is a conflict.
    """
    connection = await db.connection()
    row = await repository.finish_sent(
        connection, client_id, command_id, status=status, result=result, now=utcnow()
    )
    if row is not None:
        log.info(
            "command.acknowledged",
            client_id=str(client_id),
            command_id=str(command_id),
            status=status.value,
            latency_seconds=_seconds_between(row["sent_at"], row["acked_at"]),
        )
        return row

    current = await repository.find_command(connection, client_id, command_id)
    if current is None:
        raise CommandNotFound
    if current["status"] == status.value:
        return current
    if current["status"] == CommandStatus.PENDING.value:
        log.warning(
            "command.ack_refused",
            client_id=str(client_id),
            command_id=str(command_id),
            reason="not_sent",
        )
        raise CommandNotSent
    log.warning(
        "command.ack_refused",
        client_id=str(client_id),
        command_id=str(command_id),
        reason="already_acknowledged",
    )
    raise CommandAlreadyAcknowledged


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)
