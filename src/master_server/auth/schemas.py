from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from master_server.users.schemas import UserRead


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=1024)
    otp: str | None = Field(default=None, max_length=64)


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user: UserRead


class OtpSetupResponse(BaseModel):
    secret: str = Field(description="Base32 TOTP secret, 160 bits.")
    otpauth_uri: str


class OtpVerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)
