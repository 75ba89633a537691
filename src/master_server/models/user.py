from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from master_server.models.base import Base, CreatedAt, UTCDateTime, UUIDPrimaryKey


class UserRole(StrEnum):
    ADMIN = "admin"  # manages users and every client
    USER = "user"  # sees and commands only the clients assigned to them


class User(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64))
    # The username folded to lower case: uniqueness and login ignore case.
    username_key: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text, deferred=True)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.USER.value)
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)

    # TOTP: a secret is pending from setup until a code verifies it, then it
    # becomes the enabled secret. otp_last_step is the time step of the last
    # accepted code; only later steps are accepted, so no code works twice.
    otp_secret: Mapped[str | None] = mapped_column(String(64), deferred=True)
    otp_pending_secret: Mapped[str | None] = mapped_column(String(64), deferred=True)
    is_otp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    otp_last_step: Mapped[int | None] = mapped_column(default=None)

    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    def __repr__(self) -> str:
        return f"User(id={self.id!s}, role={self.role})"
