import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.auth.dependencies import (
    AuthenticatedClient,
    CurrentAdmin,
    CurrentCaller,
    CurrentUser,
)
from master_server.auth.errors import InvalidToken, WrongTokenKind
from master_server.clients import service as client_service
from master_server.clients.access import ensure_admin, ensure_visible, is_admin
from master_server.clients.errors import (
    AdminRequired,
    AssignmentNotFound,
    ClientNotFound,
    NetworkChangeForbidden,
)
from master_server.clients.presence import ClientStatus
from master_server.clients.schemas import (
    AssignmentCreate,
    ClientAdminRead,
    ClientCreate,
    ClientCreated,
    ClientRead,
    NetworkUpdate,
    ProvisionKeyRead,
)
from master_server.core.config import Settings
from master_server.core.deps import DbSession, PageDep, SettingsDep
from master_server.core.errors import (
    VALIDATION_RESPONSES,
    Forbidden,
    error_responses,
)
from master_server.models import Client
from master_server.models.base import utcnow
from master_server.users.errors import UserNotFound

router = APIRouter(
    prefix="/clients",
    tags=["clients"],
    responses={
        **error_responses(InvalidToken, WrongTokenKind),
        **VALIDATION_RESPONSES,
    },
)


async def _present(
    db: AsyncSession,
    clients: list[Client],
    *,
    for_admin: bool,
    settings: Settings,
    seen: dict[uuid.UUID, datetime] | None = None,
    now: datetime | None = None,
) -> list[ClientAdminRead] | list[ClientRead]:
    """Clients as the caller may see them: with assignments only for an admin.

    `seen` and `now` are each client's `last_seen_at` and the time its status
    is judged at, when the caller already has them; otherwise they are read.
    """
    now = now or utcnow()
    ids = [client.id for client in clients]
    if seen is None:
        seen = await client_service.last_seen_at(db, ids)
    statuses = [
        client_service.status_of(
            client,
            seen.get(client.id),
            now=now,
            timeout_seconds=settings.heartbeat_timeout,
        )
        for client in clients
    ]
    if not for_admin:
        return [
            ClientRead.of(client, status, seen.get(client.id))
            for client, status in zip(clients, statuses, strict=True)
        ]
    assigned = await client_service.assigned_user_ids(db, ids)
    return [
        ClientAdminRead.of_admin(
            client, status, seen.get(client.id), assigned[client.id]
        )
        for client, status in zip(clients, statuses, strict=True)
    ]


async def _present_one(
    db: AsyncSession, client: Client, *, for_admin: bool, settings: Settings
) -> ClientAdminRead | ClientRead:
    (presented,) = await _present(db, [client], for_admin=for_admin, settings=settings)
    return presented


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(Forbidden),
)
async def create_client(
    body: ClientCreate, admin: CurrentAdmin, db: DbSession, settings: SettingsDep
) -> ClientCreated:
    """Create a client and its one-time provision key, shown only here (admin only)."""
    client, provision_key = await client_service.create_client(
        db, name=body.name, description=body.description or ""
    )
    status_ = client_service.status_of(
        client, None, now=utcnow(), timeout_seconds=settings.heartbeat_timeout
    )
    return ClientCreated(
        **dict(ClientAdminRead.of_admin(client, status_, None, [])),
        provision_key=provision_key,
    )


@router.get("")
async def list_clients(
    caller: CurrentUser,
    db: DbSession,
    page: PageDep,
    settings: SettingsDep,
    status_filter: Annotated[
        ClientStatus | None,
        Query(alias="status", description="Only clients with this status."),
    ] = None,
) -> list[ClientAdminRead] | list[ClientRead]:
    """Every client for an admin, the assigned ones for a user; oldest first.

    Admins get `assigned_user_ids` on each client, users never do.
    """
    # One time and one read for the filter and the statuses shown, so that a
    # client crossing the timeout, or heartbeating, meanwhile is never listed
    # under a status it does not show.
    now = utcnow()
    listed = await client_service.list_clients(
        db,
        caller,
        status=status_filter,
        page=page,
        now=now,
        timeout_seconds=settings.heartbeat_timeout,
    )
    return await _present(
        db,
        [client for client, _ in listed],
        for_admin=is_admin(caller),
        settings=settings,
        seen={client.id: seen for client, seen in listed if seen is not None},
        now=now,
    )


@router.get("/{client_id}", responses=error_responses(ClientNotFound))
async def get_client(
    client_id: uuid.UUID, caller: CurrentUser, db: DbSession, settings: SettingsDep
) -> ClientAdminRead | ClientRead:
    """One client (admin, or a user it is assigned to); admins also get its users."""
    await ensure_visible(db, caller, client_id)

    client = await client_service.get_client(db, client_id)
    return await _present_one(db, client, for_admin=is_admin(caller), settings=settings)


@router.patch(
    "/{client_id}/network",
    responses=error_responses(ClientNotFound, NetworkChangeForbidden),
)
async def update_client_network(
    client_id: uuid.UUID,
    body: NetworkUpdate,
    caller: CurrentCaller,
    db: DbSession,
    settings: SettingsDep,
) -> ClientAdminRead | ClientRead:
    """Change eth0, wlan0 or service_port (admin, or the client's own token).

    Only the fields present in the body change; null clears one. An assigned
    user gets 403, any other user 404.
    """
    await ensure_visible(db, caller, client_id)
    if not isinstance(caller, AuthenticatedClient) and not is_admin(caller):
        raise NetworkChangeForbidden

    changes = body.model_dump(include=body.model_fields_set)
    client = await client_service.update_network(db, client_id, changes)
    return await _present_one(db, client, for_admin=is_admin(caller), settings=settings)


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(ClientNotFound, AdminRequired),
)
async def delete_client(
    client_id: uuid.UUID, caller: CurrentUser, db: DbSession
) -> None:
    """Delete a client with its token, assignments, heartbeats, events and commands."""
    await ensure_visible(db, caller, client_id)
    ensure_admin(caller)

    await client_service.delete_client(db, client_id)


@router.post(
    "/{client_id}/assign",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(ClientNotFound, UserNotFound, AdminRequired),
)
async def assign_user(
    client_id: uuid.UUID, body: AssignmentCreate, caller: CurrentUser, db: DbSession
) -> None:
    """Let a user see and command this client (admin only; repeating it is a no-op)."""
    await ensure_visible(db, caller, client_id)
    ensure_admin(caller)

    await client_service.assign(db, client_id, body.user_id)


@router.delete(
    "/{client_id}/assign/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(ClientNotFound, AssignmentNotFound, AdminRequired),
)
async def unassign_user(
    client_id: uuid.UUID, user_id: uuid.UUID, caller: CurrentUser, db: DbSession
) -> None:
    """Take a user's access to this client away (admin only)."""
    await ensure_visible(db, caller, client_id)
    ensure_admin(caller)

    await client_service.unassign(db, client_id, user_id)


@router.post(
    "/{client_id}/provision-key",
    responses=error_responses(ClientNotFound, AdminRequired),
)
async def regenerate_provision_key(
    client_id: uuid.UUID, caller: CurrentUser, db: DbSession
) -> ProvisionKeyRead:
    """Issue a new one-time key; the old key and the client's token stop working."""
    await ensure_visible(db, caller, client_id)
    ensure_admin(caller)

    provision_key = await client_service.regenerate_provision_key(db, client_id)
    return ProvisionKeyRead(provision_key=provision_key)
