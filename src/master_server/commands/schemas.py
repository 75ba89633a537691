import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from master_server.core.limits import check_json
from master_server.models import CommandStatus

MAX_PAYLOAD_BYTES = 65_536
MAX_RESULT_BYTES = 65_536
MAX_JSON_DEPTH = 32


def _check_payload(value: dict[str, Any] | None) -> dict[str, Any] | None:
    check_json(value, max_depth=MAX_JSON_DEPTH, max_bytes=MAX_PAYLOAD_BYTES)
    return value


def _check_result(value: Any) -> Any:
    return check_json(value, max_depth=MAX_JSON_DEPTH, max_bytes=MAX_RESULT_BYTES)


CommandName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="1 to 64 characters: letters, digits and . _ : -, "
        "starting with a letter or digit.",
        examples=["reboot", "service.restart"],
    ),
]


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: CommandName
    payload: Annotated[
        dict[str, Any] | None,
        AfterValidator(_check_payload),
        Field(
            description="A JSON object for the client, at most 64 KiB serialized "
            "and 32 levels deep."
        ),
    ] = None


class AckStatus(StrEnum):
    # The client ran the command.
    ACKED = "acked"
    # The client could not run it.
    FAILED = "failed"


class CommandAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AckStatus
    result: Annotated[
        Any,
        AfterValidator(_check_result),
        Field(
            description="Any JSON value, at most 64 KiB serialized and 32 levels "
            "deep. Kept from the first ack; a repeated ack does not replace it."
        ),
    ] = None


class CommandRead(BaseModel):
    id: uuid.UUID
    client_id: uuid.UUID
    command: str
    payload: dict[str, Any] | None
    status: CommandStatus = Field(
        description="pending -> sent (handed out by a poll) -> acked or failed "
        "(reported by the client); never backwards."
    )
    created_by: uuid.UUID | None = Field(
        description="The user who created it; null once that user is deleted."
    )
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    result: Any
