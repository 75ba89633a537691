import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from master_server.clients.presence import ClientStatus
from master_server.clients.validation import IPAddress, Port
from master_server.core.limits import check_text
from master_server.models import Client

MAX_DESCRIPTION_LENGTH = 4096

ClientName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"\S",
        description="1 to 128 characters, not only spaces.",
    ),
    AfterValidator(check_text),
]
Description = Annotated[
    str,
    Field(max_length=MAX_DESCRIPTION_LENGTH, description="At most 4096 characters."),
    AfterValidator(check_text),
]


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ClientName
    description: Description | None = Field(
        default=None, description='At most 4096 characters; null is the same as "".'
    )


class NetworkUpdate(BaseModel):
    """Only the fields present are changed; null clears a field."""

    model_config = ConfigDict(extra="forbid")

    eth0: IPAddress | None = None
    wlan0: IPAddress | None = None
    service_port: Port | None = None


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID


class ClientRead(BaseModel):
    """A client as a user (or the client itself) sees it."""

    id: uuid.UUID
    name: str
    description: str
    status: ClientStatus = Field(
        description="unregistered: never registered; online: a heartbeat arrived "
        "within MASTER_HEARTBEAT_TIMEOUT seconds, by the server's clock; offline: "
        "registered, but no heartbeat within that time."
    )
    created_at: datetime
    registered_at: datetime | None = Field(
        description="When a device last registered with a provision key."
    )
    last_seen_at: datetime | None = Field(
        description="When the server received the last heartbeat."
    )
    eth0: str | None
    wlan0: str | None
    service_port: int | None

    @classmethod
    def of(
        cls, client: Client, status: ClientStatus, last_seen_at: datetime | None
    ) -> "ClientRead":
        return ClientRead(
            id=client.id,
            name=client.name,
            description=client.description,
            status=status,
            created_at=client.created_at,
            registered_at=client.registered_at,
            last_seen_at=last_seen_at,
            eth0=client.eth0,
            wlan0=client.wlan0,
            service_port=client.service_port,
        )


class ClientAdminRead(ClientRead):
    """A client as an admin sees it: with the users assigned to it."""

    assigned_user_ids: list[uuid.UUID] = Field(
        description="Users who may see and command this client, in assignment order."
    )

    @classmethod
    def of_admin(
        cls,
        client: Client,
        status: ClientStatus,
        last_seen_at: datetime | None,
        assigned_user_ids: list[uuid.UUID],
    ) -> "ClientAdminRead":
        return ClientAdminRead(
            **dict(ClientRead.of(client, status, last_seen_at)),
            assigned_user_ids=assigned_user_ids,
        )


class ClientCreated(ClientAdminRead):
    provision_key: str = Field(
        description="The one-time key a device registers with. Shown only here "
        "and by POST /clients/{id}/provision-key; only its hash is stored."
    )


class ProvisionKeyRead(BaseModel):
    provision_key: str = Field(
        description="A new one-time key. The previous key and the client's current "
        "token stopped working when this one was issued."
    )
