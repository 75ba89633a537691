"""Logins, sessions and TOTP enrolment."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from master_server.auth import totp
from master_server.auth.errors import (
    InvalidCredentials,
    InvalidOtp,
    InvalidToken,
    OtpNotStarted,
    OtpRequired,
)
from master_server.core.security import (
    PasswordHashing,
    TokenKind,
    hash_token,
    hashes_match,
    new_token,
)
from master_server.models import Session, User
from master_server.models.base import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OpenedSession:
    token: str
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    user: User
    session_id: uuid.UUID


async def login(
    db: AsyncSession,
    hashing: PasswordHashing,
    *,
    username: str,
    password: str,
    otp: str | None,
    ttl_seconds: int,
) -> OpenedSession:
    """Check the password (and code), then open a session.

    An unknown user, a wrong password and a disabled user are the same refusal,
    and all three cost one Argon2 verification.
    """
    user = await _find_by_username(db, username)
    password_hash = user.password_hash if user is not None else None
    is_valid = await anyio.to_thread.run_sync(hashing.verify, password_hash, password)
    if user is None or not is_valid or user.is_disabled:
        # The caller hears one refusal for all three; the log tells them apart.
        log.warning(
            "user.login.failed",
            user_id=str(user.id) if user else None,
            reason=_failure_reason(user, is_valid),
        )
        raise InvalidCredentials

    if user.is_otp_enabled:
        if not otp:
            raise OtpRequired
        assert user.otp_secret is not None
        await _consume_code(db, user, user.otp_secret, otp)

    if hashing.needs_rehash(user.password_hash):
        user.password_hash = await anyio.to_thread.run_sync(hashing.hash, password)
        log.info("user.password.rehashed", user_id=str(user.id))

    # Expired sessions are dead weight; each login clears its user's.
    now = utcnow()
    await db.execute(
        delete(Session).where(Session.user_id == user.id, Session.expires_at <= now)
    )
    token = new_token(TokenKind.SESSION)
    expires_at = now + timedelta(seconds=ttl_seconds)
    db.add(
        Session(user_id=user.id, token_hash=hash_token(token), expires_at=expires_at)
    )
    await db.flush()

    log.info("user.login.succeeded", user_id=str(user.id))
    return OpenedSession(token=token, expires_at=expires_at, user=user)


def _failure_reason(user: User | None, is_valid: bool) -> str:
    if user is None:
        return "unknown_user"
    return "wrong_password" if not is_valid else "disabled"


async def _find_by_username(db: AsyncSession, username: str) -> User | None:
    # No username holds a NUL, and PostgreSQL refuses one in a query parameter:
    # answer such a name as the unknown user it is, not with a database error.
    if "\x00" in username:
        return None
    user: User | None = await db.scalar(
        select(User)
        .where(User.username_key == username.lower())
        .options(undefer(User.password_hash), undefer(User.otp_secret))
    )
    return user


async def resolve_session(db: AsyncSession, token: str) -> AuthenticatedUser:
    """The user behind a live session token, or InvalidToken."""
    digest = hash_token(token)
    row = (
        await db.execute(
            select(Session.id, Session.token_hash, User)
            .join(User, User.id == Session.user_id)
            .where(Session.token_hash == digest, Session.expires_at > utcnow())
        )
    ).first()
    if row is None or not hashes_match(row.token_hash, digest):
        raise InvalidToken
    if row.User.is_disabled:
        raise InvalidToken
    return AuthenticatedUser(user=row.User, session_id=row.id)


async def logout(db: AsyncSession, session_id: uuid.UUID) -> None:
    await db.execute(delete(Session).where(Session.id == session_id))


async def end_sessions(db: AsyncSession, user_id: uuid.UUID) -> None:
    await db.execute(delete(Session).where(Session.user_id == user_id))


async def start_otp_setup(
    db: AsyncSession, user: User, *, issuer: str
) -> tuple[str, str]:
    """A new pending secret and its URI; OTP stays as it was until verified."""
    secret = totp.new_secret()
    await db.execute(
        update(User).where(User.id == user.id).values(otp_pending_secret=secret)
    )
    log.info("user.otp.setup_started", user_id=str(user.id))
    uri = totp.provisioning_uri(secret, issuer=issuer, account=user.username)
    return secret, uri


async def verify_otp(db: AsyncSession, user: User, code: str) -> User:
    """Turn OTP on with the pending secret once a code from it checks out.

    The pending secret replaces any enabled one, so its codes are checked on
    their own: steps spent with the old secret do not hold the new one back.
    The UPDATE only applies while that secret is still pending, so of two
    requests racing with one code, only one turns it on.
    """
    pending_secret = await db.scalar(
        select(User.otp_pending_secret).where(User.id == user.id)
    )
    if pending_secret is None:
        raise OtpNotStarted

    step = totp.match_step(pending_secret, code, last_step=None)
    if step is None:
        log.warning("user.otp.rejected", user_id=str(user.id))
        raise InvalidOtp
    enabled = await db.execute(
        update(User)
        .where(User.id == user.id, User.otp_pending_secret == pending_secret)
        .values(
            otp_secret=pending_secret,
            otp_pending_secret=None,
            is_otp_enabled=True,
            otp_last_step=step,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if enabled.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("user.otp.replayed", user_id=str(user.id))
        raise InvalidOtp
    await db.refresh(user)

    log.info("user.otp.enabled", user_id=str(user.id))
    return user


async def _consume_code(db: AsyncSession, user: User, secret: str, code: str) -> None:
    """Accept `code` once: its step is recorded only if it is newer than the last.

    The conditional UPDATE makes two requests racing with one code agree: only
    one of them moves the step forward.
    """
    step = totp.match_step(secret, code, last_step=user.otp_last_step)
    if step is None:
        log.warning("user.otp.rejected", user_id=str(user.id))
        raise InvalidOtp
    moved = await db.execute(
        update(User)
        .where(
            User.id == user.id,
            (User.otp_last_step.is_(None)) | (User.otp_last_step < step),
        )
        .values(otp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("user.otp.replayed", user_id=str(user.id))
        raise InvalidOtp
    user.otp_last_step = step
