import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.commands import service as command_service
from master_server.core.db import Database
from tests.clients.factories import create_client, create_command


async def test_a_poll_skips_the_commands_an_uncommitted_poll_holds(
    backend: str, database: Database, db: AsyncSession
) -> None:
    if backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    device = await create_client(db)
    made = [await create_command(db, device.id) for _ in range(5)]

    async with database.sessionmaker() as first, database.sessionmaker() as second:
        held = await command_service.deliver_pending(first, device.id, limit=3)
        # SKIP LOCKED: the second poll neither waits for the first nor hands
        # out what the first holds.
        rest = await asyncio.wait_for(
            command_service.deliver_pending(second, device.id, limit=100), timeout=5
        )
        await first.commit()
        await second.commit()

    assert [row["id"] for row in held] == made[:3]
    assert [row["id"] for row in rest] == made[3:]


async def test_a_rolled_back_poll_hands_its_commands_out_again(
    database: Database, db: AsyncSession
) -> None:
    device = await create_client(db)
    made = [await create_command(db, device.id) for _ in range(2)]

    async with database.sessionmaker() as session:
        await command_service.deliver_pending(session, device.id, limit=100)
        await session.rollback()
    async with database.sessionmaker() as session:
        again = await command_service.deliver_pending(session, device.id, limit=100)
        await session.commit()

    assert [row["id"] for row in again] == made
