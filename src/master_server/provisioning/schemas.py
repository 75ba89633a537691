import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from master_server.clients.validation import IPAddress, Port
from master_server.core.limits import check_text


class RegistrationRequest(BaseModel):
    """A device's first call: its provision key and, optionally, its network."""

    model_config = ConfigDict(extra="forbid")

    provision_key: Annotated[
        str,
        Field(
            min_length=1, max_length=256, description="The one-time key from the admin."
        ),
        AfterValidator(check_text),
    ]
    eth0: IPAddress | None = None
    wlan0: IPAddress | None = None
    service_port: Port | None = None


class RegistrationResponse(BaseModel):
    client_id: uuid.UUID
    token: str = Field(
        description="The client's bearer token for every later call; shown only "
        "here, only its hash is stored."
    )
