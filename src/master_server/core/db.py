"""Engines and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite gets a single pooled connection: it allows one writer at a time, and a
transaction that reads and then writes can fail with "database is locked" when
another connection committed in between, which no busy timeout cures. Funnelling
every statement through one connection trades read concurrency, which a small
deployment does not need, for never seeing that error.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from master_server.core.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(raw: str) -> URL:
    """Accept `sqlite:///…` and `postgresql://…` as written, with async drivers."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "sqlite" and url.drivername in {"sqlite", "sqlite+pysqlite"}:
        url = url.set(drivername="sqlite+aiosqlite")
    elif backend in {"postgresql", "postgres"} and url.drivername in {
        "postgres",
        "postgresql",
        "postgresql+psycopg2",
        "postgresql+psycopg",
    }:
        url = url.set(drivername="postgresql+asyncpg")
    return url


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    target = async_url(url or settings.database_url)
    # Statement parameters can hold TOTP secrets and token hashes; keep them
    # out of the exception messages that end up in logs.
    options: dict[str, Any] = {"hide_parameters": True}
    if target.get_backend_name() == "sqlite":
        options.update(pool_size=1, max_overflow=0, pool_timeout=60)
    else:
        options.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_size,
            pool_timeout=30,
            pool_pre_ping=True,
        )
    engine = create_async_engine(target, **options)
    if target.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


class Database:
    """One engine and its session factory, created and disposed with the app."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends, rolled back on error.

        A context manager, not a generator to iterate: an error raised in the
        caller's block must reach this frame, so the connection is rolled back
        and returned at once rather than whenever the generator is collected.
        """
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()
