from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import (
    Base,
    CreatedAt,
    UTCDateTime,
    UUIDPrimaryKey,
)


class Client(UUIDPrimaryKey, CreatedAt, Base):
    """A managed device.

    Its presence (`unregistered`, `online`, `offline`) is not stored: it is
    derived from `registered_at` and its latest heartbeat's time against the
    server's clock, in `master_server.clients.presence`.
    """

    __tablename__ = "clients"
    __table_args__ = (Index("ix_clients_created_at_id", "created_at", "id"),)

    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")

    # SHA-256 of the one-time key; cleared when a registration consumes it.
    provision_key_hash: Mapped[str | None] = mapped_column(
        String(64), unique=True, default=None
    )
    # SHA-256 of the device's bearer token; cleared when the key is regenerated.
    token_hash: Mapped[str | None] = mapped_column(
        String(64), unique=True, default=None
    )

    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    eth0: Mapped[str | None] = mapped_column(String(45), default=None)
    wlan0: Mapped[str | None] = mapped_column(String(45), default=None)
    service_port: Mapped[int | None] = mapped_column(default=None)
