import uuid

from fastapi import APIRouter, status

from master_server.auth.dependencies import CurrentAdmin
from master_server.auth.errors import InvalidToken
from master_server.core.deps import DbSession, HashingDep, PageDep
from master_server.core.errors import (
    VALIDATION_RESPONSES,
    DatabaseBusy,
    DatabaseUnavailable,
    Forbidden,
    error_responses,
)
from master_server.users import service as user_service
from master_server.users.errors import LastAdmin, UsernameTaken, UserNotFound
from master_server.users.schemas import UserCreate, UserRead, UserUpdate

router = APIRouter(
    prefix="/users",
    tags=["users"],
    responses={
        **error_responses(InvalidToken, Forbidden, DatabaseUnavailable, DatabaseBusy),
        **VALIDATION_RESPONSES,
    },
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(UsernameTaken),
)
async def create_user(
    body: UserCreate, admin: CurrentAdmin, db: DbSession, hashing: HashingDep
) -> UserRead:
    """Create a user (admin only)."""
    user = await user_service.create_user(
        db, hashing, username=body.username, password=body.password, role=body.role
    )
    return UserRead.of(user)


@router.get("")
async def list_users(
    admin: CurrentAdmin, db: DbSession, page: PageDep
) -> list[UserRead]:
    """Every user, oldest first (admin only)."""
    return [UserRead.of(user) for user in await user_service.list_users(db, page)]


@router.get("/{user_id}", responses=error_responses(UserNotFound))
async def get_user(user_id: uuid.UUID, admin: CurrentAdmin, db: DbSession) -> UserRead:
    """One user (admin only)."""
    return UserRead.of(await user_service.get_user(db, user_id))


@router.patch("/{user_id}", responses=error_responses(UserNotFound, LastAdmin))
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    admin: CurrentAdmin,
    db: DbSession,
    hashing: HashingDep,
) -> UserRead:
    """Change a user's password, role or disabled flag (admin only)."""
    user = await user_service.update_user(db, hashing, user_id, body)
    return UserRead.of(user)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(UserNotFound, LastAdmin),
)
async def delete_user(user_id: uuid.UUID, admin: CurrentAdmin, db: DbSession) -> None:
    """Delete a user with their sessions and client assignments (admin only)."""
    await user_service.delete_user(db, user_id)
