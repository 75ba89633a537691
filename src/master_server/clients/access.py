"""Who may see which client: checked on every object, not only every route.

A client that the caller may not see is answered exactly like one that does
not exist (404), so ids of other people's devices cannot be probed.
"""

import uuid

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from master_server.auth.dependencies import AuthenticatedClient, Caller
from master_server.auth.service import AuthenticatedUser
from master_server.clients.errors import AdminRequired, ClientNotFound
from master_server.models import Client, UserClient, UserRole


async def ensure_visible(
    db: AsyncSession | AsyncConnection, caller: Caller, client_id: uuid.UUID
) -> None:
    """Raise ClientNotFound unless `caller` may act on client `client_id`.

    An admin sees every client, a user the clients assigned to them, and a
    client token only its own id.
    """
    if isinstance(caller, AuthenticatedClient):
        if caller.client_id != client_id:
            raise ClientNotFound
        return

    condition = exists().where(Client.id == client_id)
    if not is_admin(caller):
        condition = exists().where(
            UserClient.client_id == client_id,
            UserClient.user_id == caller.user.id,
        )
    if not await db.scalar(select(condition)):
        raise ClientNotFound


def is_admin(caller: Caller) -> bool:
    return isinstance(caller, AuthenticatedUser) and caller.user.role == UserRole.ADMIN


def ensure_admin(caller: Caller) -> None:
    """Raise AdminRequired unless `caller` is an admin.

    Call it after `ensure_visible`, so that a user asking about a client that
    is not theirs gets the same 404 as for a missing one, never a 403 that
    would confirm the client exists.
    """
    if not is_admin(caller):
        raise AdminRequired
