"""Registration: a device trades its one-time provision key for a client token."""

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.security import TokenKind, hash_token, new_token
from master_server.models import Client
from master_server.models.base import utcnow
from master_server.provisioning.errors import InvalidProvisionKey

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Registration:
    client_id: uuid.UUID
    token: str


async def register(
    db: AsyncSession, *, provision_key: str, network: dict[str, Any]
) -> Registration:
    """Consume the key and issue a token in one conditional UPDATE.

    Only a row whose key hash still matches is updated, and the same statement
    clears the hash, so of two devices racing with one key exactly one gets a
    row back (PostgreSQL re-checks the condition after the winner's row lock is
    released; SQLite runs one writer at a time). Everything that could refuse
    the request is checked before this statement, so a refusal never burns the
    key. `network` holds only the fields the device sent.
    """
    token = new_token(TokenKind.CLIENT)

    client_id = await db.scalar(
        update(Client)
        .where(
            Client.provision_key_hash.is_not(None),
            Client.provision_key_hash == hash_token(provision_key),
        )
        .values(
            provision_key_hash=None,
            token_hash=hash_token(token),
            registered_at=utcnow(),
            **network,
        )
        .returning(Client.id)
        .execution_options(synchronize_session=False)
    )
    if client_id is None:
        log.warning("client.registration.refused")
        raise InvalidProvisionKey

    log.info("client.registered", client_id=str(client_id), fields=sorted(network))
    return Registration(client_id=client_id, token=token)
