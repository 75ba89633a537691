import uuid
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.db import Database
from master_server.models import Client, Heartbeat, User
from tests.fixtures.fleet import Device, assign, last_seen, row_count

Url = Callable[..., str]


async def test_a_client_token_on_another_clients_heartbeat_is_a_404_and_changes_nothing(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    database: Database,
    client_url: Url,
) -> None:
    response = await client.post(
        client_url("record_heartbeat", other_device.id),
        json={"uptime_s": 1},
        headers=device.headers,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"
    assert await last_seen(database, other_device.id) is None
    assert await last_seen(database, device.id) is None
    assert await row_count(database, Heartbeat) == 0


async def test_a_client_token_on_an_unknown_client_id_is_a_404(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    response = await client.post(
        client_url("record_heartbeat", uuid.uuid4()), json={}, headers=device.headers
    )

    assert response.status_code == 404


async def test_a_session_token_on_a_heartbeat_is_a_401(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    database: Database,
    client_url: Url,
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=admin_headers
    )

    assert response.status_code == 401
    assert response.json()["code"] == "wrong_token_kind"
    assert await last_seen(database, device.id) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer msc_not-a-token-anybody-holds"},
        {"Authorization": "Bearer something"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_a_heartbeat_without_a_valid_client_token_is_a_401(
    client: httpx.AsyncClient,
    device: Device,
    database: Database,
    client_url: Url,
    headers: dict[str, str],
) -> None:
    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=headers
    )

    assert response.status_code == 401
    assert set(response.json()) >= {"error", "code"}
    assert await last_seen(database, device.id) is None


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("something", "invalid_token"),
        ("msp_a-provision-key-is-no-bearer-token", "wrong_token_kind"),
    ],
)
async def test_a_token_no_endpoint_takes_is_refused_alike_everywhere(
    client: httpx.AsyncClient,
    device: Device,
    client_url: Url,
    token: str,
    code: str,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    answers = [
        await client.post(
            client_url("record_heartbeat", device.id), json={}, headers=headers
        ),
        await client.get(client_url("list_commands", device.id), headers=headers),
        await client.get("/auth/me", headers=headers),
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 401]
    assert [answer.json()["code"] for answer in answers] == [code, code, code]


async def test_a_deleted_clients_token_stops_working_at_once(
    client: httpx.AsyncClient, device: Device, db: AsyncSession, client_url: Url
) -> None:
    first = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )
    assert first.status_code == 200

    await db.execute(delete(Client).where(Client.id == device.id))
    await db.commit()
    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_a_revoked_token_stops_working_at_once(
    client: httpx.AsyncClient,
    device: Device,
    db: AsyncSession,
    database: Database,
    client_url: Url,
) -> None:
    await db.execute(
        update(Client).where(Client.id == device.id).values(token_hash=None)
    )
    await db.commit()

    response = await client.post(
        client_url("record_heartbeat", device.id), json={}, headers=device.headers
    )

    assert response.status_code == 401
    assert await last_seen(database, device.id) is None


async def test_an_admin_and_an_assigned_user_see_the_status(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    user: User,
    user_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    await assign(db, user, device.client)

    for headers in (admin_headers, user_headers):
        response = await client.get(
            client_url("get_client_status", device.id), headers=headers
        )
        assert response.status_code == 200
        assert response.json()["client_id"] == str(device.id)


async def test_a_user_not_assigned_to_the_client_gets_404_for_its_status(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    user: User,
    user_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    await assign(db, user, other_device.client)

    response = await client.get(
        client_url("get_client_status", device.id), headers=user_headers
    )

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"


async def test_the_status_of_an_unknown_client_is_a_404(
    client: httpx.AsyncClient, admin_headers: dict[str, str], client_url: Url
) -> None:
    response = await client.get(
        client_url("get_client_status", uuid.uuid4()), headers=admin_headers
    )

    assert response.status_code == 404


async def test_a_client_token_on_the_status_is_a_401(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    response = await client.get(
        client_url("get_client_status", device.id), headers=device.headers
    )

    assert response.status_code == 401
