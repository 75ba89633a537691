import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.db import Database
from master_server.provisioning import service as provisioning_service
from master_server.provisioning.errors import InvalidProvisionKey
from tests.clients.factories import create_client


async def register_in_own_session(
    database: Database, provision_key: str
) -> provisioning_service.Registration:
    async with database.sessionmaker() as session:
        registration = await provisioning_service.register(
            session, provision_key=provision_key, network={}
        )
        await session.commit()
        return registration


async def test_a_registration_behind_an_uncommitted_winner_finds_the_key_used(
    database: Database, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    assert pending.provision_key is not None

    async with database.sessionmaker() as first:
        won = await provisioning_service.register(
            first, provision_key=pending.provision_key, network={}
        )
        # Waits for the winner's row lock (PostgreSQL) or for the one
        # connection (SQLite), then sees the key gone.
        second = asyncio.create_task(
            register_in_own_session(database, pending.provision_key)
        )
        await asyncio.sleep(0.3)
        assert not second.done()
        await first.commit()

    with pytest.raises(InvalidProvisionKey):
        await second
    assert won.client_id == pending.id


async def test_a_rolled_back_registration_leaves_the_key_usable(
    database: Database, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    assert pending.provision_key is not None

    async with database.sessionmaker() as session:
        await provisioning_service.register(
            session, provision_key=pending.provision_key, network={}
        )
        await session.rollback()

    registration = await register_in_own_session(database, pending.provision_key)
    assert registration.client_id == pending.id
