import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import (
    Base,
    JSONDocument,
    SequenceKey,
    UTCDateTime,
    utcnow,
)


class CommandStatus(StrEnum):
    """Where a command is in its life. It only ever moves forward."""

    # Created by a user; waiting for the client's next poll.
    PENDING = "pending"
    # Handed to the client by exactly one poll; waiting for its ack.
    SENT = "sent"
    # The client acknowledged it as done. Final.
    ACKED = "acked"
    # The client reported that it could not run it. Final.
    FAILED = "failed"


class Command(Base):
    """An instruction for one client.

    Commands are in creation order by `created_at`, the server's time of the
    request, then by `seq`, the order they were stored in: with several
    server processes a command created first can be stored second.
    """

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_client_id_created_at", "client_id", "created_at"),
        Index("ix_commands_client_id_status_seq", "client_id", "status", "seq"),
    )

    seq: Mapped[int] = mapped_column(SequenceKey, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    command: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    status: Mapped[str] = mapped_column(String(8), default=CommandStatus.PENDING.value)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    result: Mapped[Any] = mapped_column(JSONDocument, nullable=True, default=None)
