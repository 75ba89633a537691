"""Clients: creation with a provision key, listing, network, assignments, removal.

Registration (a device trading its provision key for a token) lives in
`master_server.provisioning`; this module issues and revokes the keys.
"""

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.auth.service import AuthenticatedUser
from master_server.clients.access import is_admin
from master_server.clients.errors import AssignmentNotFound, ClientNotFound
from master_server.clients.presence import (
    ClientStatus,
    last_seen_at_of_client,
    presence,
    presence_filter,
)
from master_server.core.deps import Page
from master_server.core.security import TokenKind, hash_token, new_token
from master_server.models import Client, User, UserClient
from master_server.models.base import utcnow
from master_server.users.errors import UserNotFound

log = structlog.get_logger(__name__)


def status_of(
    client: Client,
    last_seen_at: datetime | None,
    *,
    now: datetime,
    timeout_seconds: int,
) -> ClientStatus:
    return presence(
        client.registered_at,
        last_seen_at,
        now=now,
        timeout_seconds=timeout_seconds,
    )


async def last_seen_at(
    db: AsyncSession, client_ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """When each client was last heard from; absent if it never was."""
    if not client_ids:
        return {}
    rows = await db.execute(
        select(Client.id, last_seen_at_of_client()).where(Client.id.in_(client_ids))
    )
    return {client_id: seen for client_id, seen in rows if seen is not None}


async def create_client(
    db: AsyncSession, *, name: str, description: str
) -> tuple[Client, str]:
    """A new client and its one-time provision key (only the hash is kept)."""
    provision_key = new_token(TokenKind.PROVISION_KEY)
    client = Client(
        name=name,
        description=description,
        provision_key_hash=hash_token(provision_key),
    )
    db.add(client)
    await db.flush()

    log.info("client.created", client_id=str(client.id))
    return client, provision_key


async def list_clients(
    db: AsyncSession,
    viewer: AuthenticatedUser,
    *,
    status: ClientStatus | None,
    page: Page,
    now: datetime,
    timeout_seconds: int,
) -> list[tuple[Client, datetime | None]]:
    """Every client for an admin, the assigned ones for a user; oldest first.

    Each comes with its `last_seen_at`, read in the same statement as the
    `status` filter, so the two agree. The page's ids are picked first, from
    the (created_at, id) index alone, and only those rows are read: an offset
    deep into the fleet skips index entries, not table rows.
    """
    query = select(Client.id)
    if not is_admin(viewer):
        query = query.join(
            UserClient,
            (UserClient.client_id == Client.id)
            & (UserClient.user_id == viewer.user.id),
        )
    if status is not None:
        query = query.where(
            presence_filter(status, now=now, timeout_seconds=timeout_seconds)
        )
    page_ids = (
        query.order_by(Client.created_at, Client.id)
        .limit(page.limit)
        .offset(page.offset)
        .subquery()
    )
    rows = await db.execute(
        select(Client, last_seen_at_of_client())
        .join(page_ids, page_ids.c.id == Client.id)
        .order_by(Client.created_at, Client.id)
    )
    return [(client, seen) for client, seen in rows]


async def get_client(db: AsyncSession, client_id: uuid.UUID) -> Client:
    client = await db.get(Client, client_id, populate_existing=True)
    if client is None:
        raise ClientNotFound
    return client


async def assigned_user_ids(
    db: AsyncSession, client_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each client's assigned users, in the order they were assigned."""
    assigned: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    if not client_ids:
        return assigned
    rows = await db.execute(
        select(UserClient.client_id, UserClient.user_id)
        .where(UserClient.client_id.in_(client_ids))
        .order_by(UserClient.created_at, UserClient.user_id)
    )
    for client_id, user_id in rows:
        assigned[client_id].append(user_id)
    return assigned


async def update_network(
    db: AsyncSession, client_id: uuid.UUID, changes: dict[str, Any]
) -> Client:
    """Set the given network fields (None clears one); others stay as they are."""
    if not changes:
        return await get_client(db, client_id)

    client = await db.scalar(
        update(Client)
        .where(Client.id == client_id)
        .values(**changes)
        .returning(Client)
        .execution_options(populate_existing=True)
    )
    if client is None:
        raise ClientNotFound

    log.info("client.network.updated", client_id=str(client_id), fields=sorted(changes))
    return client


async def delete_client(db: AsyncSession, client_id: uuid.UUID) -> None:
    """Remove the client; its token goes with the row, and its assignments,
    heartbeats, events and commands with it (ON DELETE CASCADE)."""
    deleted = await db.scalar(
        delete(Client).where(Client.id == client_id).returning(Client.id)
    )
    if deleted is None:
        raise ClientNotFound
    log.info("client.deleted", client_id=str(client_id))


async def assign(db: AsyncSession, client_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Give `user_id` access to the client; assigning twice changes nothing.

    The insert ignores an existing row rather than checking first, so two
    identical requests racing each other both succeed.
    """
    if await db.scalar(select(User.id).where(User.id == user_id)) is None:
        raise UserNotFound

    connection = await db.connection()
    dialect_insert = (
        postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    )
    try:
        inserted = await db.execute(
            dialect_insert(UserClient)
            .values(user_id=user_id, client_id=client_id, created_at=utcnow())
            .on_conflict_do_nothing()
            .returning(UserClient.user_id)
        )
        is_new = inserted.first() is not None
    except IntegrityError:
        # The user or the client was deleted since we looked.
        raise UserNotFound from None

    if is_new:
        log.info("client.assigned", client_id=str(client_id), user_id=str(user_id))


async def unassign(db: AsyncSession, client_id: uuid.UUID, user_id: uuid.UUID) -> None:
    removed = await db.scalar(
        delete(UserClient)
        .where(UserClient.client_id == client_id, UserClient.user_id == user_id)
        .returning(UserClient.user_id)
    )
    if removed is None:
        raise AssignmentNotFound
    log.info("client.unassigned", client_id=str(client_id), user_id=str(user_id))


async def regenerate_provision_key(db: AsyncSession, client_id: uuid.UUID) -> str:
    """A new one-time key; the old key and the client's token stop working now.

    The device keeps its id, history and commands: registering again with the
    new key gives it a new token.
    """
    provision_key = new_token(TokenKind.PROVISION_KEY)
    had_token = (
        await db.scalar(select(Client.token_hash).where(Client.id == client_id))
    ) is not None
    updated = await db.scalar(
        update(Client)
        .where(Client.id == client_id)
        .values(provision_key_hash=hash_token(provision_key), token_hash=None)
        .returning(Client.id)
    )
    if updated is None:
        raise ClientNotFound

    log.info(
        "client.provision_key.regenerated",
        client_id=str(client_id),
        token_revoked=had_token,
    )
    return provision_key
