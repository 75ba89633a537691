"""Helpers for the auth tests: apps with other settings, and live TOTP codes."""

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from master_server.app import create_app
from master_server.auth import totp
from master_server.core.db import Database
from tests.fixtures.database import make_settings

AppClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


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


def current_step() -> int:
    """The current TOTP step, waiting out the last second before a new one.

    Tests that use the window's edges (now ± 1) would fail if the step changed
    between making a code and the server checking it.
    """
    if time.time() % totp.STEP_SECONDS > totp.STEP_SECONDS - 1.5:
        time.sleep(1.6)
    return totp.time_step()


def code_for(secret: str, offset: int = 0) -> str:
    return totp.code_at_step(secret, current_step() + offset)
