"""Group commit on real databases: grouped, durable, all-or-nothing per batch."""

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from master_server.auth.errors import InvalidToken
from master_server.clients.errors import ClientNotFound
from master_server.core.batching import (
    BatchWriter,
    HeldConnection,
    SqliteCodec,
    driver_connection,
)
from master_server.core.config import Settings
from master_server.core.db import Database, create_engine
from master_server.core.security import hash_token
from master_server.events import service as event_service
from master_server.events.repository import EventRow
from master_server.events.service import EventItem
from master_server.heartbeats import repository as heartbeat_repository
from master_server.heartbeats import service as heartbeat_service
from master_server.heartbeats.repository import HeartbeatRow
from master_server.heartbeats.service import HeartbeatOutcome, HeartbeatRecorded
from master_server.models import Client, Event, Heartbeat
from master_server.models.base import utcnow
from tests.fixtures.fleet import (
    Device,
    create_device,
    last_seen,
    row_count,
    stored_uptimes,
)

Url = Callable[..., str]


@asynccontextmanager
async def failing_inserts(
    engine: AsyncEngine, table: str, *, when: str = "1 = 1"
) -> AsyncIterator[None]:
    """Make every INSERT into `table` whose row matches `when` fail, for real."""
    name = f"fail_{table}"
    if engine.dialect.name == "sqlite":
        create = [
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {when} "
            "BEGIN SELECT RAISE(ABORT, 'storage broken by the test'); END"
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name}"]
    else:
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'storage broken by the test'; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION {name}"]
    async with engine.begin() as conn:
        for statement in create:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for statement in drop:
                await conn.execute(text(statement))


async def test_a_burst_of_heartbeats_and_events_from_20_clients_all_succeed(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    database: Database,
    client_url: Url,
) -> None:
    devices = [await create_device(db, f"pi-{n}") for n in range(20)]
    batches_before = app.state.heartbeat_writer.stats.batches

    async def heartbeat(device: Device, n: int) -> httpx.Response:
        return await client.post(
            client_url("record_heartbeat", device.id),
            json={"uptime_s": n, "metrics": {"n": n}},
            headers=device.headers,
        )

    async def event(device: Device, n: int) -> httpx.Response:
        return await client.post(
            client_url("record_event", device.id),
            json={"level": "info", "message": f"event {n}", "data": {"n": n}},
            headers=device.headers,
        )

    requests = []
    for n in range(100):
        device = devices[n % 20]
        requests += [heartbeat(device, n), event(device, n)]
    responses = await asyncio.gather(*requests)

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 100, [r.text for r in responses if r.is_error][:3]
    assert statuses.count(201) == 100
    assert await row_count(database, Heartbeat) == 100
    assert await row_count(database, Event) == 100
    for device in devices:
        assert len(await stored_uptimes(database, device.id)) == 5
        assert await last_seen(database, device.id) is not None
    # Grouped: far fewer transactions than heartbeats.
    assert app.state.heartbeat_writer.stats.batches - batches_before < 100


async def test_every_heartbeat_answered_200_is_in_the_database(
    client: httpx.AsyncClient, db: AsyncSession, database: Database, client_url: Url
) -> None:
    devices = [await create_device(db, f"pi-{n}") for n in range(10)]

    async def heartbeat(n: int) -> tuple[int, httpx.Response]:
        device = devices[n % 10]
        response = await client.post(
            client_url("record_heartbeat", device.id),
            json={"uptime_s": n},
            headers=device.headers,
        )
        return n, response

    results = await asyncio.gather(*(heartbeat(n) for n in range(150)))

    answered = {n for n, response in results if response.status_code == 200}
    assert len(answered) == 150
    stored: list[float] = []
    for device in devices:
        stored += await stored_uptimes(database, device.id)
    assert sorted(stored) == sorted(float(n) for n in answered)
    for n, response in results:
        device = devices[n % 10]
        seen = await last_seen(database, device.id)
        assert seen is not None
        assert seen >= datetime.fromisoformat(response.json()["server_time"])


async def test_when_a_batch_cannot_be_stored_every_request_in_it_gets_a_json_503(
    client: httpx.AsyncClient,
    db: AsyncSession,
    database: Database,
    client_url: Url,
) -> None:
    devices = [await create_device(db, f"pi-{n}") for n in range(5)]

    async with failing_inserts(database.engine, "heartbeats"):
        responses = await asyncio.gather(
            *(
                client.post(
                    client_url("record_heartbeat", device.id),
                    json={"uptime_s": 1},
                    headers=device.headers,
                )
                for device in devices
                for _ in range(4)
            )
        )

    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "write_failed"
        assert response.json()["error"]
    # The batch's UPDATE of clients was rolled back with its INSERT.
    for device in devices:
        assert await last_seen(database, device.id) is None
    assert await row_count(database, Heartbeat) == 0

    # Once the database is well again, the retried heartbeat goes through.
    retried = await client.post(
        client_url("record_heartbeat", devices[0].id),
        json={"uptime_s": 1},
        headers=devices[0].headers,
    )
    assert retried.status_code == 200


async def test_when_an_event_batch_cannot_be_stored_every_event_gets_a_503(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    async with failing_inserts(database.engine, "events"):
        responses = await asyncio.gather(
            *(
                client.post(
                    client_url("record_event", device.id),
                    json={"level": "error", "message": f"m{n}"},
                    headers=device.headers,
                )
                for n in range(10)
            )
        )

    assert {response.status_code for response in responses} == {503}
    assert {response.json()["code"] for response in responses} == {"write_failed"}
    assert await row_count(database, Event) == 0


async def test_a_failed_batch_reports_nothing_as_stored_that_was_not(
    client: httpx.AsyncClient,
    db: AsyncSession,
    database: Database,
    client_url: Url,
) -> None:
    # One poisoned heartbeat fails whichever batch it lands in; each device
    # sends one heartbeat, so each device's state shows its own outcome.
    devices = [await create_device(db, f"pi-{n}") for n in range(40)]

    async def heartbeat(n: int) -> tuple[Device, httpx.Response]:
        response = await client.post(
            client_url("record_heartbeat", devices[n].id),
            json={"uptime_s": n},
            headers=devices[n].headers,
        )
        return devices[n], response

    async with failing_inserts(database.engine, "heartbeats", when="NEW.uptime_s = 7"):
        results = await asyncio.gather(*(heartbeat(n) for n in range(40)))

    statuses = {response.status_code for _, response in results}
    assert statuses <= {200, 503}
    assert dict(results)[devices[7]].status_code == 503
    for device, response in results:
        seen = await last_seen(database, device.id)
        uptimes = await stored_uptimes(database, device.id)
        if response.status_code == 200:
            assert seen is not None and len(uptimes) == 1
        else:
            assert response.json()["code"] == "write_failed"
            assert seen is None and uptimes == []


async def test_concurrent_heartbeats_from_one_client_never_move_last_seen_at_back(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                client_url("record_heartbeat", device.id),
                json={"uptime_s": n},
                headers=device.headers,
            )
            for n in range(50)
        )
    )

    assert {response.status_code for response in responses} == {200}
    latest = max(datetime.fromisoformat(r.json()["server_time"]) for r in responses)
    assert await last_seen(database, device.id) == latest
    assert len(await stored_uptimes(database, device.id)) == 50


def item(device: Device, received_at: datetime, uptime: float) -> HeartbeatRow:
    return HeartbeatRow(
        client_id=device.id,
        token_hash=hash_token(device.token),
        uptime_s=uptime,
        metrics_json=None,
        received_at=received_at,
    )


async def store(
    engine: AsyncEngine, items: list[HeartbeatRow]
) -> list[HeartbeatRecorded | Exception]:
    return list(await heartbeat_service.write_heartbeats(engine, items))


async def test_an_older_batch_committed_last_does_not_move_last_seen_at_back(
    device: Device, database: Database
) -> None:
    newer, older = utcnow(), utcnow() - timedelta(seconds=30)

    await store(database.engine, [item(device, newer, 2)])
    await store(database.engine, [item(device, older, 1)])

    assert await last_seen(database, device.id) == newer
    async with database.engine.connect() as conn:
        status = await heartbeat_service.get_status(conn, device.id, timeout_seconds=90)
    assert status.last_heartbeat == {
        "uptime_s": 2.0,
        "metrics": None,
        "received_at": newer,
    }
    assert await stored_uptimes(database, device.id) == [2.0, 1.0]


async def test_within_one_batch_the_latest_heartbeat_wins_whatever_its_place(
    device: Device, database: Database
) -> None:
    now = utcnow()
    items = [
        item(device, now - timedelta(seconds=1), 1),
        item(device, now, 3),
        item(device, now - timedelta(seconds=2), 2),
    ]

    outcomes = await store(database.engine, items)

    assert all(isinstance(outcome, HeartbeatRecorded) for outcome in outcomes)
    assert await last_seen(database, device.id) == now
    assert await stored_uptimes(database, device.id) == [1.0, 3.0, 2.0]


async def test_a_heartbeat_on_the_second_is_stored_as_the_orm_stores_times(
    device: Device, database: Database
) -> None:
    # On SQLite times are text, compared as text. A batch once left the
    # formatting to sqlite3, which drops a zero fraction ("10:00:00" against
    # the ORM's "10:00:00.000000"), so such a client fell out of the online
    # filter at the very edge of its timeout while its status said online.
    on_the_second = utcnow().replace(microsecond=0)
    await store(database.engine, [item(device, on_the_second, 1)])

    async with database.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(Heartbeat.created_at).where(
                    Heartbeat.client_id == device.id,
                    Heartbeat.created_at >= on_the_second,
                )
            )
        ).scalar_one_or_none()

    assert stored == on_the_second


async def test_an_event_on_the_second_is_found_from_that_second(
    device: Device, database: Database
) -> None:
    on_the_second = utcnow().replace(microsecond=0)
    row = EventRow(
        id=uuid.uuid4(),
        client_id=device.id,
        token_hash=hash_token(device.token),
        level="info",
        message="on the second",
        data_json=None,
        created_at=on_the_second,
    )
    await event_service.write_events(database.engine, [EventItem(row=row, data=None)])

    async with database.engine.connect() as conn:
        found = (
            await conn.execute(
                select(Event.message).where(Event.created_at >= on_the_second)
            )
        ).scalars()

    assert list(found) == ["on the second"]


@asynccontextmanager
async def newer_heartbeat_in_flight(
    database: Database, settings: Settings, device: Device, received_at: datetime
) -> AsyncIterator[None]:
    """Another worker's transaction: it stored a newer heartbeat, not committed."""
    if not database.is_sqlite:
        async with database.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = await driver_connection(autocommit)
            async with driver.transaction():
                await heartbeat_repository.store_batch(
                    driver, [item(device, received_at, 2)]
                )
                yield
        return

    # Another process on the same SQLite file holds the write lock.
    codec = SqliteCodec.of(database.engine.dialect)
    path = make_url(settings.database_url).database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO heartbeats (client_id, uptime_s, created_at) VALUES (?, 2, ?)",
            (codec.to_id(device.id), codec.to_time(received_at)),
        )
        yield
        other.execute("COMMIT")
    finally:
        other.close()


async def test_an_older_heartbeat_waiting_on_a_newer_one_never_moves_last_seen_at_back(
    device: Device, database: Database, settings: Settings
) -> None:
    # A second engine stands for a second worker process.
    other_engine = create_engine(settings)
    newer, older = utcnow(), utcnow() - timedelta(seconds=30)
    try:
        async with newer_heartbeat_in_flight(database, settings, device, newer):
            waiting = asyncio.create_task(store(other_engine, [item(device, older, 1)]))
            await asyncio.sleep(0.2)
            # PostgreSQL stores the older one meanwhile; SQLite makes it wait
            # for the write lock. Either way the newer one is seen last.
            assert waiting.done() is not database.is_sqlite
        outcomes = await waiting
    finally:
        await other_engine.dispose()

    assert isinstance(outcomes[0], HeartbeatRecorded)
    assert await last_seen(database, device.id) == newer
    assert 1.0 in await stored_uptimes(database, device.id)


async def test_a_client_deleted_while_its_batch_is_stored_goes_with_all_of_it(
    device: Device, database: Database, settings: Settings
) -> None:
    async def delete_the_client() -> None:
        async with database.engine.begin() as conn:
            await conn.execute(delete(Client).where(Client.id == device.id))

    async with newer_heartbeat_in_flight(database, settings, device, utcnow()):
        deleting = asyncio.create_task(delete_the_client())
        await asyncio.sleep(0.2)
        # Behind the batch's lock on the client (PostgreSQL) or the write
        # lock (SQLite): the history cannot gain a row for a deleted client.
        assert not deleting.done()
    await deleting

    assert await stored_uptimes(database, device.id) == []
    async with database.engine.connect() as conn:
        assert (
            await conn.scalar(select(Client.id).where(Client.id == device.id)) is None
        )


async def test_a_client_deleted_before_its_batch_is_refused_alone(
    device: Device, other_device: Device, db: AsyncSession, database: Database
) -> None:
    await db.execute(delete(Client).where(Client.id == other_device.id))
    await db.commit()
    now = utcnow()

    outcomes = await store(
        database.engine, [item(device, now, 1), item(other_device, now, 2)]
    )

    assert isinstance(outcomes[0], HeartbeatRecorded)
    assert isinstance(outcomes[1], InvalidToken)
    assert await stored_uptimes(database, device.id) == [1.0]


async def test_in_one_batch_a_token_on_another_clients_id_is_refused_alone(
    device: Device, other_device: Device, database: Database
) -> None:
    now = utcnow()
    trespass = replace(item(device, now, 9), client_id=other_device.id)

    outcomes = await store(database.engine, [trespass, item(other_device, now, 1)])

    assert isinstance(outcomes[0], ClientNotFound)
    assert isinstance(outcomes[1], HeartbeatRecorded)
    async with database.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(Heartbeat).where(Heartbeat.uptime_s == 9)
        )
    assert count == 0


async def test_in_one_event_batch_each_refusal_is_its_own_and_the_rest_is_stored(
    device: Device, other_device: Device, database: Database
) -> None:
    def event(owner: Device, client_id: uuid.UUID, message: str) -> EventItem:
        row = EventRow(
            id=uuid.uuid4(),
            client_id=client_id,
            token_hash=hash_token(owner.token),
            level="info",
            message=message,
            data_json=None,
            created_at=utcnow(),
        )
        return EventItem(row=row, data=None)

    stranger = replace(
        event(device, device.id, "unknown token").row, token_hash=hash_token("x")
    )
    outcomes = await event_service.write_events(
        database.engine,
        [
            event(device, other_device.id, "trespass"),
            EventItem(row=stranger, data=None),
            event(other_device, other_device.id, "its own"),
        ],
    )

    assert isinstance(outcomes[0], ClientNotFound)
    assert isinstance(outcomes[1], InvalidToken)
    assert not isinstance(outcomes[2], Exception)
    async with database.engine.connect() as conn:
        stored = (await conn.execute(select(Event.message))).scalars().all()
    assert stored == ["its own"]


async def test_a_writer_whose_connection_the_server_closed_reconnects_before_writing(
    device: Device, database: Database
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has no server to close connections")
    held = HeldConnection(database.engine)

    async def write(rows: Sequence[HeartbeatRow]) -> list[HeartbeatOutcome]:
        return await heartbeat_service.write_heartbeats(
            database.engine, rows, held=held
        )

    async with BatchWriter("heartbeats", write, on_stop=held.close) as writer:
        await writer.submit(item(device, utcnow(), 1))
        # What a database restart or an administrator does to a connection.
        backend = (await held.driver()).get_server_pid()
        async with database.engine.connect() as conn:
            await conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}
            )
        await asyncio.sleep(0.2)  # the writer's connection hears of it

        recorded = await writer.submit(item(device, utcnow(), 2))

    assert isinstance(recorded, HeartbeatRecorded)
    assert (await held.driver()).get_server_pid() != backend
    await held.close()
    assert await stored_uptimes(database, device.id) == [1.0, 2.0]


async def test_the_writer_stores_what_it_holds_when_the_app_stops(
    settings: Settings, device: Device, database: Database
) -> None:
    from master_server.app import create_app

    app = create_app(settings, database=database)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        async with app.router.lifespan_context(app):
            url = app.url_path_for("record_heartbeat", client_id=str(device.id))
            requests = [
                asyncio.create_task(
                    http.post(url, json={"uptime_s": n}, headers=device.headers)
                )
                for n in range(20)
            ]
            writer = app.state.heartbeat_writer
            while writer.queued == 0:
                await asyncio.sleep(0)
        responses = await asyncio.gather(*requests)

    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert answered and len(answered) + len(refused) == 20
    assert {r.json()["code"] for r in refused} <= {"shutting_down"}
    assert len(await stored_uptimes(database, device.id)) == len(answered)
