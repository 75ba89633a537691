import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from master_server.clients.presence import ClientStatus
from master_server.core.limits import (
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_ENTRIES,
    check_document,
)

# A JSON object a client reports (heartbeat metrics, event data), bounded so
# that every device's report stays small and storable.
Document = Annotated[
    dict[str, Any],
    AfterValidator(check_document),
    Field(
        description=(
            f"A JSON object, at most {MAX_DOCUMENT_DEPTH} levels deep and "
            f"{MAX_DOCUMENT_ENTRIES} entries in all; finite numbers, no NUL "
            "characters."
        )
    ),
]


class HeartbeatCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"uptime_s": 3600.5, "metrics": {"load1": 0.12}}]
        },
    )

    uptime_s: (
        Annotated[
            float,
            Field(
                ge=0,
                strict=True,
                allow_inf_nan=False,
                description="Seconds since the device booted (a JSON number ≥ 0).",
            ),
        ]
        | None
    ) = None
    metrics: Document | None = None


class HeartbeatAck(BaseModel):
    status: Literal["ok"] = "ok"
    server_time: datetime = Field(
        description="When the server received the heartbeat; now `last_seen_at`."
    )
    pending_commands: int = Field(
        description="How many commands wait for the client's next poll."
    )


class LastHeartbeat(BaseModel):
    uptime_s: float | None
    metrics: dict[str, Any] | None
    received_at: datetime


class ClientStatusRead(BaseModel):
    client_id: uuid.UUID
    status: ClientStatus
    last_seen_at: datetime | None
    last_heartbeat: LastHeartbeat | None = Field(
        description="The latest heartbeat as received, or null before the first."
    )
    pending_commands: int
