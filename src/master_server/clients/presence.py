"""A client's presence, derived in one place from the server's own clock.

Nothing a device says about time decides it: only when the server received
its last heartbeat (`last_seen_at`, stamped by the server) and
`MASTER_HEARTBEAT_TIMEOUT`. `last_seen_at` is the newest `created_at` in the
client's heartbeat history: the statements that read it are here too.
"""

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, ScalarSelect, and_, exists, func, select

from master_server.models import Client, Heartbeat


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

    "Seen within the timeout" is a heartbeat received since the cutoff, one
    probe of the (client_id, created_at) index; "not seen" is its negation.
    """
    cutoff = now - timedelta(seconds=timeout_seconds)
    seen_recently = exists().where(
        Heartbeat.client_id == Client.id, Heartbeat.created_at >= cutoff
    )
    match status:
        case ClientStatus.UNREGISTERED:
            return Client.registered_at.is_(None)
        case ClientStatus.ONLINE:
            return and_(Client.registered_at.is_not(None), seen_recently)
        case ClientStatus.OFFLINE:
            return and_(Client.registered_at.is_not(None), ~seen_recently)


def last_seen_at_of_client() -> ScalarSelect[datetime]:
    """`Client`'s `last_seen_at`, as a column for a query over clients.

    The newest heartbeat's time, read from the end of the client's stretch
    of the (client_id, created_at) index, however long its history; NULL
    when it never sent one.
    """
    return (
        select(func.max(Heartbeat.created_at))
        .where(Heartbeat.client_id == Client.id)
        .correlate(Client)
        .scalar_subquery()
    )
