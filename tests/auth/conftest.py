"""Fixtures for the auth tests: apps on the test database with other settings."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from master_server.app import create_app
from master_server.core.db import Database
from tests.auth.helpers import AppClientFactory
from tests.fixtures.database import make_settings


@pytest.fixture
def app_client(
    database_url: str, engine: AsyncEngine, database: Database
) -> AppClientFactory:
    """Another app on the test's (emptied) database, with some settings changed."""

    @asynccontextmanager
    async def open_client(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(database_url, **overrides)
        application = create_app(settings, database=Database(engine))
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test"
            ) as http:
                yield http

    return open_client
