"""The Alembic migrations: up from empty, back down, and equal to the models."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from master_server.core import migrations
from master_server.core.config import Settings
from master_server.core.db import create_engine
from master_server.core.migrations import alembic_config
from master_server.models import Base
from tests.fixtures.database import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
)


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own that nothing has touched, on the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


async def _inspect(settings: Settings, check: Any) -> Any:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(check)
    finally:
        await engine.dispose()


# Alembic's env.py runs its own event loop, so it runs in a thread here.
async def upgrade(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrations.upgrade, database_url, revision)


async def downgrade(database_url: str, revision: str) -> None:
    await asyncio.to_thread(migrations.downgrade, database_url, revision)


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def test_there_is_a_single_head(empty_database_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(empty_database_url))

    assert len(script.get_heads()) == 1


async def test_upgrade_from_empty_creates_every_table_at_head(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_heads()

    await upgrade(empty_database_url)

    tables = await _inspect(settings, _table_names)
    assert tables == {table.name for table in Base.metadata.sorted_tables} | {
        "alembic_version"
    }
    assert await _inspect(settings, _current_revision) == head[0]


async def test_the_migrated_schema_matches_the_models(
    empty_database_url: str,
) -> None:
    await upgrade(empty_database_url)

    differences = await _inspect(make_settings(empty_database_url), _schema_differences)

    assert differences == []


async def test_downgrade_to_base_removes_every_table(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    await upgrade(empty_database_url)

    await downgrade(empty_database_url, "base")

    assert await _inspect(settings, _table_names) <= {"alembic_version"}
    assert await _inspect(settings, _current_revision) is None


async def test_every_revision_goes_up_and_down_one_step_at_a_time(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    script = ScriptDirectory.from_config(alembic_config(empty_database_url))
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]

    for revision in revisions:
        await upgrade(empty_database_url, revision)
        assert await _inspect(settings, _current_revision) == revision
    for _ in revisions:
        await downgrade(empty_database_url, "-1")
    await upgrade(empty_database_url)

    assert await _inspect(settings, _schema_differences) == []
