"""User accounts: creation, changes and removal, guarding the last admin."""

import uuid

import anyio
import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.auth import service as auth_service
from master_server.core.deps import Page
from master_server.core.security import PasswordHashing
from master_server.models import User, UserRole
from master_server.models.base import utcnow
from master_server.users.errors import LastAdmin, UsernameTaken, UserNotFound
from master_server.users.schemas import UserUpdate

log = structlog.get_logger(__name__)


async def create_user(
    db: AsyncSession,
    hashing: PasswordHashing,
    *,
    username: str,
    password: str,
    role: UserRole = UserRole.USER,
) -> User:
    if await _username_exists(db, username):
        raise UsernameTaken

    password_hash = await anyio.to_thread.run_sync(hashing.hash, password)
    user = User(
        username=username,
        username_key=username.lower(),
        password_hash=password_hash,
        role=role.value,
    )
    db.add(user)
    try:
        # A savepoint, so a lost race leaves the caller's transaction usable.
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:
        raise UsernameTaken from None

    log.info("user.created", user_id=str(user.id), role=user.role)
    return user


async def list_users(db: AsyncSession, page: Page) -> list[User]:
    rows = await db.scalars(
        select(User)
        .order_by(User.created_at, User.id)
        .limit(page.limit)
        .offset(page.offset)
    )
    return list(rows)


async def get_user(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise UserNotFound
    return user


async def update_user(
    db: AsyncSession, hashing: PasswordHashing, user_id: uuid.UUID, changes: UserUpdate
) -> User:
    """Apply `changes`; a new password or disabling ends the user's sessions."""
    # Hashed before any row is locked: Argon2 is slow on purpose.
    password_hash = (
        await anyio.to_thread.run_sync(hashing.hash, changes.password)
        if changes.password is not None
        else None
    )
    loses_admin = (changes.role is not None and changes.role != UserRole.ADMIN) or (
        changes.disabled is True
    )
    if loses_admin:
        user = await _lock_keeping_an_admin(db, user_id)
    else:
        user = await get_user(db, user_id)

    if password_hash is not None:
        user.password_hash = password_hash
    if changes.role is not None:
        user.role = changes.role.value
    if changes.disabled is not None:
        user.is_disabled = changes.disabled
    user.updated_at = utcnow()
    await db.flush()

    if changes.password is not None or changes.disabled:
        await auth_service.end_sessions(db, user.id)
    log.info(
        "user.updated",
        user_id=str(user.id),
        fields=sorted(changes.model_dump(exclude_none=True)),
    )
    return user


async def delete_user(db: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove the user; sessions and assignments go with it (ON DELETE CASCADE)."""
    user = await _lock_keeping_an_admin(db, user_id)

    await db.delete(user)
    await db.flush()
    log.info("user.deleted", user_id=str(user_id))


async def count_users(db: AsyncSession) -> int:
    return (await db.scalar(select(func.count()).select_from(User))) or 0


async def _lock_keeping_an_admin(db: AsyncSession, user_id: uuid.UUID) -> User:
    """The user, about to stop being an enabled admin if they are one; LastAdmin
    when no other enabled admin would remain.

    On PostgreSQL the user's row and every enabled admin's row are locked in one
    statement, in id order, and the decision is made on those locked rows: two
    admins demoting each other at once cannot both succeed, and requests that
    take overlapping locks always take them in the same order, so they queue
    instead of deadlocking. SQLite serialises writers anyway.
    """
    rows = (
        await db.execute(
            select(User.id, User.role, User.is_disabled)
            .where(
                (User.id == user_id)
                | ((User.role == UserRole.ADMIN.value) & User.is_disabled.is_(False))
            )
            .order_by(User.id)
            .with_for_update()
        )
    ).all()
    enabled_admins = {
        row.id for row in rows if row.role == UserRole.ADMIN and not row.is_disabled
    }
    if user_id in enabled_admins and len(enabled_admins) == 1:
        raise LastAdmin

    # Loaded again: the caller's own row may sit in the session from before
    # the lock was taken.
    user = await db.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFound
    return user


async def _username_exists(db: AsyncSession, username: str) -> bool:
    found = await db.scalar(
        select(User.id).where(User.username_key == username.lower())
    )
    return found is not None
