import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import (
    Base,
    JSONDocument,
    SequenceKey,
    UTCDateTime,
    utcnow,
)


class EventLevel(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Event(Base):
    """Something a client reported. `seq` orders events exactly as they arrived."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_client_id_seq", "client_id", "seq"),
        Index("ix_events_client_id_created_at", "client_id", "created_at"),
    )

    seq: Mapped[int] = mapped_column(SequenceKey, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
