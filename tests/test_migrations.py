"""The Alembic migrations: up from empty, back down, and equal to the models."""

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Connection,
    Float,
    Integer,
    String,
    Uuid,
    column,
    func,
    insert,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from master_server.core import migrations
from master_server.core.config import Settings
from master_server.core.db import create_engine
from master_server.core.migrations import alembic_config
from master_server.models import Base
from master_server.models.base import UTCDateTime
from tests.cli.test_masterctl import cli_env
from tests.fixtures.database import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
)
from tests.fixtures.server import bin_path


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


# Revision 0002 moved last_seen_at and last_heartbeat to client_presence.
_CLIENTS_0001 = table(
    "clients",
    column("id", Uuid()),
    column("name", String()),
    column("description", String()),
    column("created_at", UTCDateTime()),
    column("registered_at", UTCDateTime()),
    column("last_seen_at", UTCDateTime()),
    column("last_heartbeat", JSON()),
)
_CLIENTS = table(
    "clients",
    column("id", Uuid()),
    column("name", String()),
    column("description", String()),
    column("created_at", UTCDateTime()),
)
_HEARTBEATS = table(
    "heartbeats",
    column("client_id", Uuid()),
    column("uptime_s", Float()),
    column("created_at", UTCDateTime()),
)
_PRESENCE = table(
    "client_presence",
    column("client_id", Uuid()),
    column("last_seen_at", UTCDateTime()),
    column("last_heartbeat", JSON()),
)
# Revision 0004 reads presence from the history and drops client_presence.
_HISTORY = table(
    "heartbeats",
    column("seq", Integer()),
    column("client_id", Uuid()),
    column("uptime_s", Float()),
    column("metrics", JSON()),
    column("created_at", UTCDateTime()),
)


async def _run(settings: Settings, statements: Any) -> Any:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            return await statements(connection)
    finally:
        await engine.dispose()


async def test_moving_presence_out_of_clients_keeps_it_and_every_clients_history(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    seen, quiet = uuid.uuid4(), uuid.uuid4()
    seen_at = datetime(2026, 12, 3, 15, 0, 0, 123456, tzinfo=UTC)
    beat = {"uptime_s": 12.5, "metrics": None, "received_at": "2026-12-03T15:00:00Z"}
    await upgrade(empty_database_url, "0001")

    async def seed(connection: AsyncConnection) -> None:
        await connection.execute(
            insert(_CLIENTS_0001),
            [
                {
                    "id": client_id,
                    "name": name,
                    "description": "",
                    "created_at": seen_at,
                    "registered_at": seen_at,
                    "last_seen_at": last_seen_at,
                    "last_heartbeat": last_heartbeat,
                }
                for client_id, name, last_seen_at, last_heartbeat in [
                    (seen, "seen", seen_at, beat),
                    (quiet, "quiet", None, None),
                ]
            ],
        )
        await connection.execute(
            insert(_HEARTBEATS),
            [{"client_id": seen, "uptime_s": 12.5, "created_at": seen_at}],
        )

    await _run(settings, seed)

    await upgrade(empty_database_url, "0002")

    async def moved(connection: AsyncConnection) -> tuple[Any, ...]:
        presence = (await connection.execute(select(_PRESENCE))).all()
        history = await connection.scalar(select(func.count()).select_from(_HEARTBEATS))
        clients = await connection.scalar(
            select(func.count()).select_from(_CLIENTS_0001)
        )
        return [tuple(row) for row in presence], history, clients

    assert await _run(settings, moved) == ([(seen, seen_at, beat)], 1, 2)

    await downgrade(empty_database_url, "0001")

    async def moved_back(connection: AsyncConnection) -> list[Any]:
        rows = await connection.execute(
            select(
                _CLIENTS_0001.c.id,
                _CLIENTS_0001.c.last_seen_at,
                _CLIENTS_0001.c.last_heartbeat,
            ).order_by(_CLIENTS_0001.c.name)
        )
        return [tuple(row) for row in rows]

    assert await _run(settings, moved_back) == [
        (quiet, None, None),
        (seen, seen_at, beat),
    ]


async def test_whole_second_times_written_by_sqlite3_get_their_fraction(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    client_id = uuid.uuid4()
    await upgrade(empty_database_url, "0002")
    is_sqlite = settings.database_url.startswith("sqlite")

    async def seed(connection: AsyncConnection) -> None:
        at = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
        await connection.execute(
            insert(_CLIENTS),
            [{"id": client_id, "name": "d", "description": "", "created_at": at}],
        )
        await connection.execute(
            insert(_PRESENCE),
            [{"client_id": client_id, "last_seen_at": at, "last_heartbeat": {}}],
        )
        if is_sqlite:  # the text sqlite3 itself wrote for such a time
            await connection.execute(
                text("UPDATE client_presence SET last_seen_at = :short"),
                {"short": "2026-12-03 10:00:00"},
            )

    await _run(settings, seed)
    await upgrade(empty_database_url, "0003")

    async def seen_from_ten(connection: AsyncConnection) -> Any:
        on_the_second = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
        return await connection.scalar(
            select(_PRESENCE.c.last_seen_at).where(
                _PRESENCE.c.last_seen_at >= on_the_second
            )
        )

    assert await _run(settings, seen_from_ten) == datetime(
        2026, 12, 3, 10, 0, 0, tzinfo=UTC
    )


async def test_reading_presence_from_the_history_keeps_every_clients_presence(
    empty_database_url: str,
) -> None:
    settings = make_settings(empty_database_url)
    beating, edited, quiet = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    earlier = datetime(2026, 12, 4, 9, 0, 0, 250000, tzinfo=UTC)
    later = datetime(2026, 12, 4, 9, 0, 30, tzinfo=UTC)
    await upgrade(empty_database_url, "0003")

    async def seed(connection: AsyncConnection) -> None:
        await connection.execute(
            insert(_CLIENTS),
            [
                {"id": id_, "name": name, "description": "", "created_at": earlier}
                for id_, name in [
                    (beating, "beating"),
                    (edited, "edited"),
                    (quiet, "quiet"),
                ]
            ],
        )
        # `beating` as the server kept it: presence is its newest heartbeat.
        # `edited` has a presence newer than its history, as a hand-edited
        # database might; it must not lose it.
        await connection.execute(
            insert(_HISTORY),
            [
                {
                    "client_id": client_id,
                    "uptime_s": uptime,
                    "metrics": metrics,
                    "created_at": at,
                }
                for client_id, uptime, metrics, at in [
                    (beating, 1.0, None, earlier),
                    (beating, 31.0, {"load1": 0.5}, later),
                    (edited, 5.0, None, earlier),
                ]
            ],
        )
        await connection.execute(
            insert(_PRESENCE),
            [
                {
                    "client_id": beating,
                    "last_seen_at": later,
                    "last_heartbeat": {
                        "uptime_s": 31.0,
                        "metrics": {"load1": 0.5},
                        "received_at": "2026-12-04T09:00:30Z",
                    },
                },
                {
                    "client_id": edited,
                    "last_seen_at": later,
                    "last_heartbeat": {
                        "uptime_s": 7.5,
                        "metrics": {"disk": 12},
                        "received_at": "2026-12-04T09:00:30Z",
                    },
                },
            ],
        )

    await _run(settings, seed)
    await upgrade(empty_database_url)

    async def history(connection: AsyncConnection) -> list[Any]:
        rows = await connection.execute(
            select(
                _HISTORY.c.client_id,
                _HISTORY.c.uptime_s,
                _HISTORY.c.metrics,
                _HISTORY.c.created_at,
            ).order_by(_HISTORY.c.client_id, _HISTORY.c.created_at)
        )
        return [tuple(row) for row in rows]

    expected_history = sorted(
        [
            (beating, 1.0, None, earlier),
            (beating, 31.0, {"load1": 0.5}, later),
            (edited, 5.0, None, earlier),
            (edited, 7.5, {"disk": 12}, later),
        ],
        key=lambda row: (row[0], row[3]),
    )
    assert await _run(settings, history) == expected_history

    assert "client_presence" not in await _inspect(settings, _table_names)

    await downgrade(empty_database_url, "0003")

    async def presence(connection: AsyncConnection) -> list[Any]:
        rows = await connection.execute(
            select(
                _PRESENCE.c.client_id,
                _PRESENCE.c.last_seen_at,
                _PRESENCE.c.last_heartbeat,
            ).order_by(_PRESENCE.c.client_id)
        )
        return [tuple(row) for row in rows]

    rebuilt = await _run(settings, presence)
    assert [(client_id, seen) for client_id, seen, _ in rebuilt] == sorted(
        [(beating, later), (edited, later)]
    )
    beats = {client_id: beat for client_id, _, beat in rebuilt}
    assert beats[beating]["uptime_s"] == 31.0
    assert beats[beating]["metrics"] == {"load1": 0.5}
    assert datetime.fromisoformat(beats[beating]["received_at"]) == later
    assert beats[edited]["metrics"] == {"disk": 12}


async def test_servers_migrating_the_same_database_at_once_all_succeed(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite runs a single server process")
    settings = make_settings(empty_database_url)
    await upgrade(empty_database_url, "0003")

    async def history(connection: AsyncConnection) -> None:
        # Enough of it that building 0004's index takes a while, long enough
        # for the migrations to overlap.
        client_id = uuid.uuid4()
        at = datetime(2026, 12, 4, tzinfo=UTC)
        await connection.execute(
            insert(_CLIENTS),
            [{"id": client_id, "name": "d", "description": "", "created_at": at}],
        )
        await connection.execute(
            text(
                "INSERT INTO heartbeats (client_id, uptime_s, created_at) "
                "SELECT :id, n, :at FROM generate_series(1, 300000) AS n"
            ),
            {"id": client_id, "at": at},
        )

    await _run(settings, history)

    # Real processes, as replicas starting together would be.
    migrating = [
        subprocess.Popen(
            [bin_path("masterctl"), "migrate"],
            env=cli_env(empty_database_url),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [
        (process.communicate(timeout=60)[1], process.returncode)
        for process in migrating
    ]

    assert [code for _, code in outcomes] == [0, 0, 0], outcomes
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_heads()
    assert await _inspect(settings, _current_revision) == head[0]
    assert await _inspect(settings, _schema_differences) == []
