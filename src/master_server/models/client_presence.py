import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import Base, JSONDocument, UTCDateTime


class ClientPresence(Base):
    """When a client was last heard from, and what it said; one row per client.

    Kept apart from `clients` because heartbeats rewrite it all the time: the
    `clients` rows (and their five indexes) then stay still, so PostgreSQL can
    keep their pages all-visible and page through them from the index alone.
    A client that never sent a heartbeat has no row here.
    """

    __tablename__ = "client_presence"
    __table_args__ = (Index("ix_client_presence_last_seen_at", "last_seen_at"),)

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_heartbeat: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
