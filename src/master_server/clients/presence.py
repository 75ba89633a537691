"""A client's presence, derived in one place from the server's own clock.

Nothing a device says about time decides it: only when the server received
its last heartbeat (`last_seen_at`, stamped by the server) and
`MASTER_HEARTBEAT_TIMEOUT`.
"""

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists

from master_server.models import Client, ClientPresence


class ClientStatus(StrEnum):
    # Created by an admin; no device has registered with its key yet.
    UNREGISTERED = "unregistered"
    # Registered, and a heartbeat arrived within the heartbeat timeout.
    ONLINE = "online"
    # Registered, but no heartbeat within the timeout (or none ever).
    OFFLINE = "offline"


def presence(
    registered_at: datetime | None,
    last_seen_at: datetime | None,
    *,
    now: datetime,
    timeout_seconds: int,
) -> ClientStatus:
    if registered_at is None:
        return ClientStatus.UNREGISTERED
    if last_seen_at is not None and now - last_seen_at <= timedelta(
        seconds=timeout_seconds
    ):
        return ClientStatus.ONLINE
    return ClientStatus.OFFLINE


def presence_filter(
    status: ClientStatus, *, now: datetime, timeout_seconds: int
) -> ColumnElement[bool]:
    """The SQL condition on `Client` for `status`, the same rule as `presence()`.

    A client that never sent a heartbeat has no `ClientPresence` row, so
    "seen within the timeout" is an EXISTS, and "not seen" its negation.
    """
    cutoff = now - timedelta(seconds=timeout_seconds)
    seen_recently = exists().where(
        ClientPresence.client_id == Client.id, ClientPresence.last_seen_at >= cutoff
    )
    match status:
        case ClientStatus.UNREGISTERED:
            return Client.registered_at.is_(None)
        case ClientStatus.ONLINE:
            return and_(Client.registered_at.is_not(None), seen_recently)
        case ClientStatus.OFFLINE:
            return and_(Client.registered_at.is_not(None), ~seen_recently)
