"""Small factories for clients, their commands and their history.

Each one commits, so the app under test sees what it made. A test that reads
through `db` afterwards should commit before its next request (on SQLite the
app and the test share one connection); a rollback would work too, but it
expires the objects the test still holds.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from master_server.clients import service as client_service
from master_server.models import Command, CommandStatus, User
from master_server.provisioning import service as provisioning_service
from tests.fixtures.fleet import set_last_seen


@dataclass(frozen=True)
class ProvisionedClient:
    """A client as the tests know it: its id and the secrets issued for it."""

    id: uuid.UUID
    provision_key: str | None
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        assert self.token is not None, "the client is not registered"
        return {"Authorization": f"Bearer {self.token}"}


async def create_client(
    db: AsyncSession,
    *,
    name: str = "pi-1",
    registered: bool = True,
    last_seen_at: datetime | None = None,
    assigned_to: Iterable[User] = (),
) -> ProvisionedClient:
    client, provision_key = await client_service.create_client(
        db, name=name, description=""
    )
    token = None
    if registered:
        registration = await provisioning_service.register(
            db, provision_key=provision_key, network={}
        )
        token, provision_key = registration.token, None
    if last_seen_at is not None:
        await set_last_seen(db, client.id, last_seen_at)
    for user in assigned_to:
        await client_service.assign(db, client.id, user.id)
    await db.commit()
    return ProvisionedClient(id=client.id, provision_key=provision_key, token=token)


async def create_command(
    db: AsyncSession,
    client_id: uuid.UUID,
    *,
    command: str = "reboot",
    payload: dict[str, Any] | None = None,
    status: CommandStatus = CommandStatus.PENDING,
    created_by: uuid.UUID | None = None,
) -> uuid.UUID:
    row = Command(
        client_id=client_id,
        command=command,
        payload=payload,
        status=status.value,
        created_by=created_by,
    )
    db.add(row)
    await db.commit()
    return row.id
