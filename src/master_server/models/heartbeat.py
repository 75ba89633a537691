import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import (
    Base,
    JSONDocument,
    SequenceKey,
    UTCDateTime,
    utcnow,
)


class Heartbeat(Base):
    """One heartbeat in a client's history.

    The history is also the client's presence: its `last_seen_at` is the
    newest `created_at` here, and its `last_heartbeat` that row, both found
    through the (client_id, created_at) index. A heartbeat is then one row
    appended, with nothing rewritten in place.
    """

    __tablename__ = "heartbeats"
    __table_args__ = (
        Index("ix_heartbeats_client_id_created_at", "client_id", "created_at"),
    )

    seq: Mapped[int] = mapped_column(SequenceKey, primary_key=True, autoincrement=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    uptime_s: Mapped[float | None] = mapped_column(Float, default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
