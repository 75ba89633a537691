"""Engines, units of work, and database errors as the API shows them."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from master_server.core.db import Database, async_url
from master_server.core.errors import install_error_handlers
from master_server.models import User


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("sqlite:///./master.db", "sqlite+aiosqlite"),
        ("sqlite:////var/lib/master/master.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@db:5432/master", "postgresql+asyncpg"),
        ("postgres://u@db/master", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u@db/master", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/master", "postgresql+asyncpg"),
    ],
)
def test_database_urls_work_as_written(raw: str, driver: str) -> None:
    url = async_url(raw)

    assert url.drivername == driver
    assert url.database == async_url(raw).database


async def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(
    engine: AsyncEngine, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")

    async with engine.connect() as connection:
        journal = await connection.scalar(text("PRAGMA journal_mode"))
        foreign_keys = await connection.scalar(text("PRAGMA foreign_keys"))
        busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))

    assert (journal, foreign_keys) == ("wal", 1)
    assert busy_timeout >= 1000


async def test_a_unit_of_work_commits_when_its_block_ends(
    database: Database,
) -> None:
    async with database.session() as session:
        session.add(User(username="bob", username_key="bob", password_hash="x"))

    async with database.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 1


async def test_a_unit_of_work_rolls_back_when_its_block_raises(
    database: Database,
) -> None:
    # Other parts of the app (the telemetry writers) may hold connections.
    checked_out = database.engine.pool.checkedout()  # type: ignore[attr-defined]

    with pytest.raises(RuntimeError):
        async with database.session() as session:
            session.add(User(username="bob", username_key="bob", password_hash="x"))
            await session.flush()
            raise RuntimeError("boom")

    async with database.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 0
    assert database.engine.pool.checkedout() == checked_out  # type: ignore[attr-defined]


async def test_a_request_that_fails_gives_its_connection_back_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # Other parts of the app (the telemetry writers) may hold connections.
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]

    for _ in range(3):
        response = await client.get(
            "/auth/me", headers={"Authorization": "Bearer mss_unknown"}
        )
        assert response.status_code == 401
        # Not left for the garbage collector: SQLite has a single connection.
        assert engine.pool.checkedout() == checked_out  # type: ignore[attr-defined]


@pytest.fixture
async def probe(engine: AsyncEngine, backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """A bare app with our error handlers and routes that make the database fail."""
    if backend != "postgresql":
        pytest.skip("SQLite stores NUL and never deadlocks (one writer at a time)")
    application = FastAPI()
    install_error_handlers(application)

    @application.get("/nul")
    async def store_nul() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})

    @application.get("/deadlock")
    async def deadlock() -> None:
        async with engine.connect() as first, engine.connect() as second:
            outcomes = await asyncio.gather(
                _lock(first, 1, 2), _lock(second, 2, 1), return_exceptions=True
            )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def _lock(connection: AsyncConnection, first: int, then: int) -> None:
    await connection.execute(text("SET deadlock_timeout = '20ms'"))
    await connection.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": 9_000 + first}
    )
    await asyncio.sleep(0.1)
    await connection.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": 9_000 + then}
    )


async def test_a_value_the_database_cannot_store_is_a_422(
    probe: httpx.AsyncClient,
) -> None:
    response = await probe.get("/nul")

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["details"][0]["type"] == "unstorable_value"


async def test_a_deadlock_is_a_503_to_retry_not_a_500(
    probe: httpx.AsyncClient,
) -> None:
    response = await probe.get("/deadlock")

    assert response.status_code == 503
    assert response.json()["code"] == "database_busy"
    assert response.headers["retry-after"] == "1"


async def test_database_errors_do_not_carry_statement_parameters(
    engine: AsyncEngine,
) -> None:
    # The message of a failed statement ends up in the error log; a TOTP secret
    # or a token hash among its parameters must not.
    with pytest.raises(DBAPIError) as raised:
        async with engine.connect() as connection:
            await connection.execute(
                text("SELECT CAST(:v AS text), missing_column FROM users"),
                {"v": "SECRET-TOTP-VALUE"},
            )

    assert "SECRET-TOTP-VALUE" not in str(raised.value)
