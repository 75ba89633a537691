import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from master_server.models import User, UserRole

Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        description="Letters, digits and . _ @ -; unique ignoring case.",
    ),
]
# Argon2 hashes the whole password, so the upper bound only limits the work.
Password = Annotated[str, Field(min_length=8, max_length=1024)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    password: Password
    role: UserRole = UserRole.USER


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password | None = None
    role: UserRole | None = None
    disabled: StrictBool | None = None


class UserRead(BaseModel):
    id: uuid.UUID
    username: str
    role: UserRole
    otp_enabled: bool
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> "UserRead":
        return cls(
            id=user.id,
            username=user.username,
            role=UserRole(user.role),
            otp_enabled=user.is_otp_enabled,
            disabled=user.is_disabled,
            created_at=user.created_at,
        )
