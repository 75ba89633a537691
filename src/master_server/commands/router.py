import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import RowMapping

from master_server.auth.dependencies import (
    AuthenticatedClient,
    CurrentCaller,
    CurrentClient,
    CurrentUser,
)
from master_server.auth.errors import InvalidToken, WrongTokenKind
from master_server.clients.access import ensure_visible
from master_server.clients.errors import ClientNotFound
from master_server.commands import service as command_service
from master_server.commands.errors import (
    CommandAlreadyAcknowledged,
    CommandNotFound,
    CommandNotSent,
)
from master_server.commands.schemas import CommandAck, CommandCreate, CommandRead
from master_server.core.deps import DbSession, PageDep
from master_server.core.errors import VALIDATION_RESPONSES, error_responses
from master_server.models import CommandStatus

router = APIRouter(
    prefix="/clients/{client_id}/commands",
    tags=["commands"],
    responses={
        **error_responses(InvalidToken, WrongTokenKind, ClientNotFound),
        **VALIDATION_RESPONSES,
    },
)


def _read(row: RowMapping) -> CommandRead:
    return CommandRead.model_validate(dict(row))


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_command(
    client_id: uuid.UUID, body: CommandCreate, caller: CurrentUser, db: DbSession
) -> CommandRead:
    """Queue a command for the client (admin or assigned user); it starts pending."""
    await ensure_visible(db, caller, client_id)

    row = await command_service.enqueue(
        db,
        client_id,
        command=body.command,
        payload=body.payload,
        created_by=caller.user.id,
    )
    return _read(row)


@router.get("")
async def list_commands(
    client_id: uuid.UUID,
    caller: CurrentCaller,
    db: DbSession,
    page: PageDep,
    status_filter: Annotated[
        CommandStatus | None,
        Query(
            alias="status",
            description="Only commands in this status (sessions only; a poll "
            "always returns pending commands).",
        ),
    ] = None,
) -> list[CommandRead]:
    """With a session: the client's commands, newest first, no side effects.

    With the client's own token (the poll): up to `limit` of its pending
    commands, oldest first, each now marked sent; every command is handed out
    by exactly one poll. A poll ignores `status` and `offset`.
    """
    await ensure_visible(db, caller, client_id)

    if isinstance(caller, AuthenticatedClient):
        rows = await command_service.deliver_pending(db, client_id, limit=page.limit)
    else:
        rows = list(
            await command_service.list_commands(
                db, client_id, status=status_filter, page=page
            )
        )
    return [_read(row) for row in rows]


@router.post(
    "/{command_id}/ack",
    responses=error_responses(
        ClientNotFound, CommandNotFound, CommandNotSent, CommandAlreadyAcknowledged
    ),
)
async def acknowledge_command(
    client_id: uuid.UUID,
    command_id: uuid.UUID,
    body: CommandAck,
    caller: CurrentClient,
    db: DbSession,
) -> CommandRead:
    """Report a sent command's outcome (client token only); repeating it is a no-op.

    sent -> acked or failed. The same ack again answers 200 with the command
    unchanged; another status on a finished command, or an ack of a command
    no poll has handed out, is 409.
    """
    await ensure_visible(db, caller, client_id)

    row = await command_service.acknowledge(
        db,
        client_id,
        command_id,
        status=CommandStatus(body.status.value),
        result=body.result,
    )
    return _read(row)
