"""Dependencies every feature shares: the database session and list paging."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.config import Settings
from master_server.core.db import Database
from master_server.core.security import PasswordHashing

# Keeps an OFFSET inside a signed 64-bit integer on every backend.
MAX_OFFSET = 2**62


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_password_hashing(request: Request) -> PasswordHashing:
    hashing: PasswordHashing = request.app.state.password_hashing
    return hashing


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work, committed before the response is sent."""
    async with get_database(request).session() as session:
        yield session


# scope="function" runs the commit when the endpoint returns, before FastAPI
# sends the response: a 2xx is only ever sent for a committed write.
DbSession = Annotated[AsyncSession, Depends(get_db_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
HashingDep = Annotated[PasswordHashing, Depends(get_password_hashing)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[
        int, Query(ge=1, le=1000, description="How many items, 1 to 1000.")
    ] = 100,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="How many items to skip.")
    ] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]
