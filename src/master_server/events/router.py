import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from master_server.auth.dependencies import CurrentUser
from master_server.auth.errors import InvalidToken
from master_server.clients.access import ensure_visible
from master_server.clients.errors import ClientNotFound
from master_server.core.deps import DbSession, PageDep
from master_server.core.errors import (
    VALIDATION_RESPONSES,
    error_responses,
)
from master_server.events import service as event_service
from master_server.events.schemas import EventCreate, EventRead, Timestamp
from master_server.events.service import EventWriter
from master_server.models import EventLevel
from master_server.telemetry.route import (
    DEVICE_WRITE_RESPONSES,
    ClientTokenHash,
    DeviceWriteRoute,
)

router = APIRouter(
    prefix="/clients/{client_id}/events",
    tags=["telemetry"],
    responses=VALIDATION_RESPONSES,
)
# The device's own write, on the lean route the telemetry writes share.
write_router = APIRouter(
    prefix="/clients/{client_id}/events",
    tags=["telemetry"],
    route_class=DeviceWriteRoute,
    responses=DEVICE_WRITE_RESPONSES,
)


@write_router.post("", status_code=status.HTTP_201_CREATED)
async def record_event(
    client_id: uuid.UUID,
    body: EventCreate,
    token_hash: ClientTokenHash,
    request: Request,
) -> EventRead:
    """Report an event (the client's own token); answered once stored.

    A body over 64 KiB is a 413. A 503 means nothing was stored: send it again.
    """
    writer: EventWriter = request.app.state.event_writer
    event = await event_service.record_event(
        writer,
        client_id=client_id,
        token_hash=token_hash,
        level=body.level,
        message=body.message,
        data=body.data,
    )
    return EventRead.of(event)


@router.get("", responses=error_responses(InvalidToken, ClientNotFound))
async def list_events(
    client_id: uuid.UUID,
    caller: CurrentUser,
    db: DbSession,
    page: PageDep,
    level: Annotated[EventLevel | None, Query(description="Only this level.")] = None,
    since: Annotated[
        Timestamp | None,
        Query(description="Only events created at or after this RFC 3339 time."),
    ] = None,
    until: Annotated[
        Timestamp | None,
        Query(description="Only events created at or before this RFC 3339 time."),
    ] = None,
) -> list[EventRead]:
    """The client's events, newest first (admin or assigned user).

    Newest means the latest `created_at`, the server's time of receipt; events
    received in the same microsecond come in the reverse of the order they
    were stored in.

    `since` and `until` need an explicit offset (`Z` or `+01:00`); a naive or
    unparsable time is a 422.
    """
    await ensure_visible(db, caller, client_id)
    events = await event_service.list_events(
        db, client_id, level=level, since=since, until=until, page=page
    )
    return [EventRead.of(event) for event in events]
