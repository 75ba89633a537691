import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import Base, CreatedAt, UTCDateTime, UUIDPrimaryKey


class Session(UUIDPrimaryKey, CreatedAt, Base):
    """A logged-in user's session, found by the SHA-256 of its bearer token."""

    __tablename__ = "sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
