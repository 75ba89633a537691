import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Request

from master_server.auth.dependencies import CurrentUser
from master_server.auth.errors import InvalidToken
from master_server.clients.access import ensure_visible
from master_server.clients.errors import ClientNotFound
from master_server.core.deps import DbSession, SettingsDep
from master_server.core.errors import (
    VALIDATION_RESPONSES,
    error_responses,
)
from master_server.heartbeats import service as heartbeat_service
from master_server.heartbeats.schemas import (
    ClientStatusRead,
    HeartbeatAck,
    HeartbeatCreate,
)
from master_server.heartbeats.service import HeartbeatWriter
from master_server.models.base import utcnow
from master_server.telemetry.route import (
    DEVICE_WRITE_RESPONSES,
    ClientTokenHash,
    DeviceWriteRoute,
)

router = APIRouter(
    prefix="/clients/{client_id}", tags=["telemetry"], responses=VALIDATION_RESPONSES
)
# The device's own write, on the lean route the telemetry writes share. It
# also carries the load harness's yardstick (bench/run): a heartbeat's body
# and answer with no token and no database work, harmless, so always there,
# but not in OpenAPI. It is the router's first route, so a heartbeat is never
# routed more cheaply than the yardstick it is measured against.
write_router = APIRouter(
    tags=["telemetry"],
    route_class=DeviceWriteRoute,
    responses=DEVICE_WRITE_RESPONSES,
)


@write_router.post("/bench/baseline", include_in_schema=False)
async def baseline(
    body: Annotated[HeartbeatCreate | None, Body()] = None,
) -> HeartbeatAck:
    """Parse a heartbeat and answer like one, touching nothing."""
    return HeartbeatAck(server_time=utcnow(), pending_commands=0)


@write_router.post("/clients/{client_id}/heartbeat")
async def record_heartbeat(
    client_id: uuid.UUID,
    token_hash: ClientTokenHash,
    request: Request,
    body: Annotated[HeartbeatCreate | None, Body()] = None,
) -> HeartbeatAck:
    """Report that the client is alive (its own token); answered once stored.

    The heartbeat joins the client's history, stamped with the server's time
    of receipt (`server_time`). The client's `last_seen_at` and
    `last_heartbeat` are its newest heartbeat, so this one becomes them unless
    a newer one was stored first (two requests racing). A body over 64 KiB is
    a 413. A 503 means nothing was stored: send it again. The body may be left
    out, which is the same as `{}`.
    """
    body = body or HeartbeatCreate()
    writer: HeartbeatWriter = request.app.state.heartbeat_writer
    recorded = await heartbeat_service.record_heartbeat(
        writer,
        client_id=client_id,
        token_hash=token_hash,
        uptime_s=body.uptime_s,
        metrics=body.metrics,
    )
    return HeartbeatAck(
        server_time=recorded.received_at, pending_commands=recorded.pending_commands
    )


@router.get("/status", responses=error_responses(InvalidToken, ClientNotFound))
async def get_client_status(
    client_id: uuid.UUID, caller: CurrentUser, db: DbSession, settings: SettingsDep
) -> ClientStatusRead:
    """The client's presence and latest heartbeat (admin or assigned user).

    `status` is `unregistered` until a device registers with the client's
    provision key, then `online` while its newest heartbeat is at most
    `MASTER_HEARTBEAT_TIMEOUT` seconds old (90 by default) by the server's
    clock, and `offline` otherwise, including before its first heartbeat.
    `last_seen_at` and `last_heartbeat` are that newest heartbeat's, or null.
    """
    await ensure_visible(db, caller, client_id)
    report = await heartbeat_service.get_status(
        db, client_id, timeout_seconds=settings.heartbeat_timeout
    )
    return ClientStatusRead.model_validate(report, from_attributes=True)
