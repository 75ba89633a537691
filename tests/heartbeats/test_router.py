from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.config import Settings
from master_server.core.db import Database
from master_server.core.limits import MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_ENTRIES
from master_server.heartbeats.router import write_router
from master_server.models import CommandStatus, Heartbeat
from master_server.models.base import utcnow
from master_server.telemetry.route import DeviceWriteRoute
from tests.fixtures.fleet import (
    Device,
    create_device,
    insert_commands,
    last_seen,
    row_count,
    set_last_seen,
    stored_uptimes,
)

Url = Callable[..., str]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_heartbeat_marks_the_client_online_and_sets_last_seen_at(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    database: Database,
    client_url: Url,
) -> None:
    status_url = client_url("get_client_status", device.id)
    before = (await client.get(status_url, headers=admin_headers)).json()
    assert before["status"] == "offline"
    assert before["last_seen_at"] is None
    assert before["last_heartbeat"] is None

    response = await client.post(
        client_url("record_heartbeat", device.id),
        json={"uptime_s": 12.5, "metrics": {"load1": 0.5}},
        headers=device.headers,
    )
    assert response.status_code == 200, response.text
    server_time = parse_time(response.json()["server_time"])

    after = (await client.get(status_url, headers=admin_headers)).json()
    assert after["status"] == "online"
    assert parse_time(after["last_seen_at"]) == server_time
    assert await last_seen(database, device.id) == server_time


async def test_a_client_is_offline_once_the_heartbeat_timeout_has_passed(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    db: AsyncSession,
    settings: Settings,
    client_url: Url,
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )
    assert response.status_code == 200

    timeout = timedelta(seconds=settings.heartbeat_timeout)
    status_url = client_url("get_client_status", device.id)
    for age, expected in [
        (timeout - timedelta(seconds=5), "online"),
        (timeout + timedelta(seconds=1), "offline"),
    ]:
        await set_last_seen(db, device.id, utcnow() - age)
        await db.commit()
        body = (await client.get(status_url, headers=admin_headers)).json()
        assert body["status"] == expected


async def test_the_answer_carries_the_servers_time_of_receipt(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    before = utcnow()
    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )
    after = utcnow()

    body = response.json()
    assert body["status"] == "ok"
    assert body["server_time"].endswith("Z")
    assert before <= parse_time(body["server_time"]) <= after


async def test_the_answer_counts_only_the_clients_pending_commands(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    db: AsyncSession,
    client_url: Url,
) -> None:
    await insert_commands(db, device.client, 3)
    await insert_commands(db, device.client, 2, status=CommandStatus.SENT)
    await insert_commands(db, device.client, 1, status=CommandStatus.ACKED)
    await insert_commands(db, other_device.client, 4)

    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )

    assert response.json()["pending_commands"] == 3


async def test_the_status_counts_pending_commands_too(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    await insert_commands(db, device.client, 2)

    response = await client.get(
        client_url("get_client_status", device.id), headers=admin_headers
    )

    assert response.json() == {
        "client_id": str(device.id),
        "status": "offline",
        "last_seen_at": None,
        "last_heartbeat": None,
        "pending_commands": 2,
    }


async def test_every_heartbeat_is_kept_in_the_history(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    for uptime in (1.0, 2.0, 3.0):
        response = await client.post(
            client_url("record_heartbeat", device.id),
            json={"uptime_s": uptime, "metrics": {"n": uptime}},
            headers=device.headers,
        )
        assert response.status_code == 200

    assert await stored_uptimes(database, device.id) == [1.0, 2.0, 3.0]
    async with database.engine.connect() as conn:
        latest = (
            await conn.execute(
                select(Heartbeat.metrics, Heartbeat.created_at)
                .where(Heartbeat.client_id == device.id)
                .order_by(Heartbeat.seq.desc())
            )
        ).first()
    assert latest is not None
    assert latest.metrics == {"n": 3.0}
    assert latest.created_at == parse_time(response.json()["server_time"])


async def test_the_latest_heartbeat_is_kept_on_the_client(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    metrics = {"load1": 0.25, "disks": [{"mount": "/", "pct": 40}], "ok": True}
    for uptime in (10, 20):
        response = await client.post(
            client_url("record_heartbeat", device.id),
            json={"uptime_s": uptime, "metrics": metrics},
            headers=device.headers,
        )

    status = (
        await client.get(
            client_url("get_client_status", device.id), headers=admin_headers
        )
    ).json()
    assert status["last_heartbeat"] == {
        "uptime_s": 20,
        "metrics": metrics,
        "received_at": response.json()["server_time"],
    }


async def test_a_heartbeat_without_a_body_counts_as_an_empty_one(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id), headers=device.headers
    )

    assert response.status_code == 200, response.text
    assert await last_seen(database, device.id) is not None


async def test_a_body_over_64_kib_is_refused_with_413_and_changes_nothing(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    body = b'{"metrics": {"blob": "' + b"x" * (64 * 1024) + b'"}}'

    declared = await client.post(
        client_url("record_heartbeat", device.id),
        content=body,
        headers={**device.headers, "Content-Type": "application/json"},
    )

    async def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    streamed = await client.post(
        client_url("record_heartbeat", device.id),
        content=chunks(),
        headers={**device.headers, "Content-Type": "application/json"},
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
    assert await last_seen(database, device.id) is None
    assert await row_count(database, Heartbeat) == 0


async def test_a_body_just_under_64_kib_is_accepted(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    prefix, suffix = b'{"metrics": {"blob": "', b'"}}'
    filler = b"x" * (64 * 1024 - len(prefix) - len(suffix))

    response = await client.post(
        client_url("record_heartbeat", device.id),
        content=prefix + filler + suffix,
        headers={**device.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text


def nested(depth: int) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for _ in range(depth - 1):
        document = {"a": document}
    return document


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"uptime_s": "abc"}, "uptime_s"),
        ({"uptime_s": "12"}, "uptime_s"),
        ({"uptime_s": -1}, "uptime_s"),
        ({"uptime_s": True}, "uptime_s"),
        ({"metrics": [1, 2]}, "metrics"),
        ({"metrics": "load=1"}, "metrics"),
        ({"metrics": 5}, "metrics"),
        ({"metrics": {"a": "\x00"}}, "metrics"),
        ({"metrics": {"\x00": 1}}, "metrics"),
        ({"metrics": {"k" * 257: 1}}, "metrics"),
        ({"metrics": nested(MAX_DOCUMENT_DEPTH + 1)}, "metrics"),
        ({"metrics": {"xs": list(range(MAX_DOCUMENT_ENTRIES))}}, "metrics"),
        ({"status": "ok"}, "status"),
    ],
)
async def test_an_invalid_heartbeat_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    device: Device,
    database: Database,
    client_url: Url,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id), json=body, headers=device.headers
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert field in {detail["field"] for detail in response.json()["details"]}
    assert await last_seen(database, device.id) is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"uptime_s": NaN}',
        b'{"uptime_s": Infinity}',
        b'{"metrics": {"x": NaN}}',
        b'{"metrics": {"x": [1, -Infinity]}}',
        b'{"metrics": {"x": "\\ud800"}}',
        b'{"metrics": {"x": "\\u0000"}}',
        b'{"uptime_s": 1',
    ],
)
async def test_json_no_database_can_store_is_a_422(
    client: httpx.AsyncClient,
    device: Device,
    database: Database,
    client_url: Url,
    raw: bytes,
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id),
        content=raw,
        headers={**device.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert await row_count(database, Heartbeat) == 0


async def test_the_deepest_and_largest_allowed_metrics_are_stored(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    big_counter = 2**64 + 1  # beyond 64 bits, as a byte counter can be
    for metrics in (
        nested(MAX_DOCUMENT_DEPTH),
        {"xs": list(range(MAX_DOCUMENT_ENTRIES - 1))},
        {"rx_bytes": big_counter, "name": "é ☃ 𝄞"},
    ):
        response = await client.post(
            client_url("record_heartbeat", device.id),
            json={"metrics": metrics},
            headers=device.headers,
        )
        assert response.status_code == 200, response.text

    status = (
        await client.get(
            client_url("get_client_status", device.id), headers=admin_headers
        )
    ).json()
    assert status["last_heartbeat"]["metrics"] == {
        "rx_bytes": big_counter,
        "name": "é ☃ 𝄞",
    }


async def test_many_clients_heartbeat_side_by_side(
    client: httpx.AsyncClient, db: AsyncSession, database: Database, client_url: Url
) -> None:
    devices = [await create_device(db, f"pi-{n}") for n in range(5)]

    for device in devices:
        response = await client.post(
            client_url("record_heartbeat", device.id),
            json={"uptime_s": 1},
            headers=device.headers,
        )
        assert response.status_code == 200

    for device in devices:
        assert await stored_uptimes(database, device.id) == [1.0]


async def test_the_benchmark_baseline_answers_like_a_heartbeat_but_stays_hidden(
    app: FastAPI, client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post(
        app.url_path_for("baseline"), json={"uptime_s": 1, "metrics": {"a": 1}}
    )

    assert response.status_code == 200
    assert set(response.json()) == {"status", "server_time", "pending_commands"}
    assert await row_count(database, Heartbeat) == 0
    assert "/bench/baseline" not in app.openapi()["paths"]


def test_the_benchmark_baseline_is_routed_no_more_cheaply_than_a_heartbeat() -> None:
    """bench/run's ratio is fair only if both pay the same framework costs.

    Same route class, same router, and the baseline first, so a heartbeat is
    matched against one more route than the baseline, never fewer.
    """
    routes = [route for route in write_router.routes if isinstance(route, APIRoute)]
    paths = [route.path for route in routes]

    assert paths.index("/bench/baseline") < paths.index(
        "/clients/{client_id}/heartbeat"
    )
    assert {type(route) for route in routes} == {DeviceWriteRoute}
