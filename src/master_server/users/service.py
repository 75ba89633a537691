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
    user = await get_user(db, user_id)
    loses_admin = (changes.role is not None and changes.role != UserRole.ADMIN) or (
        changes.disabled is True
    )
    if loses_admin and _is_enabled_admin(user):
        await _ensure_another_admin(db, user)

    if changes.password is not None:
        user.password_hash = await anyio.to_thread.run_sync(
            hashing.hash, changes.password
        )
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
    user = await get_user(db, user_id)
    if _is_enabled_admin(user):
        await _ensure_another_admin(db, user)

    await db.delete(user)
    await db.flush()
    log.info("user.deleted", user_id=str(user_id))


async def count_users(db: AsyncSession) -> int:
    return (await db.scalar(select(func.count()).select_from(User))) or 0


def _is_enabled_admin(user: User) -> bool:
    return user.role == UserRole.ADMIN and not user.is_disabled


async def _ensure_another_admin(db: AsyncSession, user: User) -> None:
    """Refuse when `user` is the last enabled admin.

    The admin rows are locked (PostgreSQL), so two admins demoting each other at
    once cannot both succeed; SQLite serialises writers anyway.
    """
    admin_ids = await db.scalars(
        select(User.id)
        .where(User.role == UserRole.ADMIN.value, User.is_disabled.is_(False))
        .with_for_update()
    )
    if not any(admin_id != user.id for admin_id in admin_ids):
        raise LastAdmin


async def _username_exists(db: AsyncSession, username: str) -> bool:
    found = await db.scalar(
        select(User.id).where(User.username_key == username.lower())
    )
    return found is not None
