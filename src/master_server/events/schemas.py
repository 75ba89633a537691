import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from master_server.core.limits import check_text
from master_server.heartbeats.schemas import Document
from master_server.models import Event, EventLevel

if TYPE_CHECKING:
    from master_server.events.service import StoredEvent

MAX_MESSAGE_LENGTH = 4096

# RFC 3339 (section 5.6) with its offset required: `Z` or `±HH:MM`. A `+` left
# unencoded in a query string arrives as a space, so " HH:MM" is read as
# "+HH:MM"; a time without an offset is never guessed at.
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?P<fraction>\.\d+)?(?P<offset>[Zz]|[+\- ]\d{2}:\d{2})$"
)


def parse_rfc3339(value: object) -> datetime:
    """An aware UTC datetime from RFC 3339 text; naive or malformed is an error."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(
            "must be an RFC 3339 time with an offset, like 2026-12-03T12:00:00Z"
        )
    offset = match["offset"].upper().replace(" ", "+")
    fraction = (match["fraction"] or "")[:7]  # microseconds, the finest we keep
    try:
        parsed = datetime.fromisoformat(
            f"{match['date']}T{match['time']}{fraction}{offset}"
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a valid date and time") from None


Timestamp = Annotated[datetime, BeforeValidator(parse_rfc3339)]

Message = Annotated[
    str,
    Field(min_length=1, max_length=MAX_MESSAGE_LENGTH),
    AfterValidator(check_text),
]


class EventCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"level": "warn", "message": "disk almost full", "data": {"pct": 93}}
            ]
        },
    )

    level: EventLevel
    message: Message
    data: Document | None = None


class EventRead(BaseModel):
    id: uuid.UUID
    client_id: uuid.UUID
    level: EventLevel
    message: str
    data: dict[str, object] | None
    created_at: datetime

    @classmethod
    def of(cls, event: "Event | StoredEvent") -> "EventRead":
        return cls(
            id=event.id,
            client_id=event.client_id,
            level=EventLevel(event.level),
            message=event.message,
            data=event.data,
            created_at=event.created_at,
        )
