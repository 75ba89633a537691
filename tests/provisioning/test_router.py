import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.security import hash_token
from master_server.models import Client, Heartbeat
from tests.clients.factories import create_client

INVALID_KEY = {"error": "invalid provision key", "code": "invalid_provision_key"}


async def stored(db: AsyncSession, client_id: uuid.UUID) -> Client:
    client = await db.get(Client, client_id, populate_existing=True)
    assert client is not None
    await db.commit()
    return client


async def test_a_device_registers_with_its_provision_key(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    assert pending.provision_key is not None

    response = await client.post(
        app.url_path_for("register_client"),
        json={
            "provision_key": pending.provision_key,
            "eth0": "192.0.2.7",
            "wlan0": "2001:db8::7",
            "service_port": 9000,
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"client_id", "token"}
    assert body["client_id"] == str(pending.id)
    assert body["token"].startswith("msc_")
    assert len(body["token"]) >= 4 + 43
    client_row = await stored(db, pending.id)
    assert client_row.token_hash == hash_token(body["token"])
    assert client_row.provision_key_hash is None
    assert client_row.registered_at is not None
    assert (
        await db.scalar(select(func.count()).where(Heartbeat.client_id == pending.id))
        == 0
    )
    assert (client_row.eth0, client_row.wlan0, client_row.service_port) == (
        "192.0.2.7",
        "2001:db8::7",
        9000,
    )


async def test_a_registered_client_is_offline_until_its_first_heartbeat(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    pending = await create_client(db, registered=False)

    await client.post(
        app.url_path_for("register_client"),
        json={"provision_key": pending.provision_key},
    )
    response = await client.get(
        app.url_path_for("get_client", client_id=str(pending.id)),
        headers=admin_headers,
    )

    assert response.json()["status"] == "offline"
    assert response.json()["registered_at"] is not None


async def test_the_issued_token_works_on_the_clients_own_paths(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    token = (
        await client.post(
            app.url_path_for("register_client"),
            json={"provision_key": pending.provision_key},
        )
    ).json()["token"]

    response = await client.get(
        app.url_path_for("list_commands", client_id=str(pending.id)),
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 200
    assert response.json() == []


async def test_a_provision_key_works_only_once(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    body = {"provision_key": pending.provision_key}
    url = app.url_path_for("register_client")

    first = await client.post(url, json=body)
    second = await client.post(url, json=body)

    assert first.status_code == 201
    assert second.status_code == 401
    assert second.json() == INVALID_KEY
    assert (await stored(db, pending.id)).token_hash == hash_token(
        first.json()["token"]
    )


@pytest.mark.parametrize(
    "key", ["msp_unknown", "mss_session-looking", "not-a-key", "x" * 256]
)
async def test_an_unknown_provision_key_is_refused(
    app: FastAPI, client: httpx.AsyncClient, key: str
) -> None:
    response = await client.post(
        app.url_path_for("register_client"), json={"provision_key": key}
    )

    assert response.status_code == 401
    assert response.json() == INVALID_KEY


async def test_registration_needs_no_bearer_token_and_ignores_one(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    pending = await create_client(db, registered=False)

    response = await client.post(
        app.url_path_for("register_client"),
        json={"provision_key": pending.provision_key},
        headers=admin_headers,
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    "extra",
    [
        {"eth0": "999.1.1.1"},
        {"wlan0": "not an address"},
        {"service_port": 0},
        {"service_port": 65536},
        {"service_port": True},
        {"service_port": "80"},
        {"name": "renamed"},
        {"token": "msc_chosen"},
    ],
)
async def test_a_refused_registration_does_not_use_up_the_key(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, extra: dict
) -> None:
    pending = await create_client(db, registered=False)
    url = app.url_path_for("register_client")

    refused = await client.post(
        url, json={"provision_key": pending.provision_key, **extra}
    )
    accepted = await client.post(url, json={"provision_key": pending.provision_key})

    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error"
    assert accepted.status_code == 201


@pytest.mark.parametrize(
    "body", [{}, {"provision_key": ""}, {"provision_key": 12}, {"provision_key": None}]
)
async def test_registration_without_a_usable_key_is_invalid_input(
    app: FastAPI, client: httpx.AsyncClient, body: dict
) -> None:
    response = await client.post(app.url_path_for("register_client"), json=body)

    assert response.status_code == 422


@pytest.mark.parametrize(
    "raw",
    [
        b'{"provision_key": "msp_\\ud800"}',
        b'{"provision_key": "msp_x", "eth0": "\\ud800"}',
        b'{"provision_key": "msp_x", "service_port": NaN}',
        b"[]",
        b"null",
    ],
)
async def test_registration_refuses_json_it_cannot_use(
    app: FastAPI, client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(
        app.url_path_for("register_client"),
        content=raw,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text


async def test_registration_refuses_a_body_that_is_not_json(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        app.url_path_for("register_client"),
        content=b"provision_key=msp_x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code in {415, 422}
    assert set(response.json()) >= {"error", "code"}


async def test_two_devices_racing_with_one_key_get_exactly_one_token(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    url = app.url_path_for("register_client")

    responses = await asyncio.gather(
        *[
            client.post(url, json={"provision_key": pending.provision_key})
            for _ in range(2)
        ]
    )

    assert sorted(r.status_code for r in responses) == [201, 401]
    (winner,) = [r for r in responses if r.status_code == 201]
    assert (await stored(db, pending.id)).token_hash == hash_token(
        winner.json()["token"]
    )


async def test_many_devices_racing_with_one_key_get_exactly_one_token(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    pending = await create_client(db, registered=False)
    url = app.url_path_for("register_client")

    responses = await asyncio.gather(
        *[
            client.post(url, json={"provision_key": pending.provision_key})
            for _ in range(20)
        ]
    )

    assert sorted(r.status_code for r in responses) == [201] + [401] * 19


async def test_registering_again_keeps_network_fields_the_device_did_not_send(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={"eth0": "10.1.1.1", "service_port": 2222},
        headers=admin_headers,
    )
    key = (
        await client.post(
            app.url_path_for("regenerate_provision_key", client_id=str(device.id)),
            headers=admin_headers,
        )
    ).json()["provision_key"]

    response = await client.post(
        app.url_path_for("register_client"),
        json={"provision_key": key, "wlan0": "10.2.2.2"},
    )

    assert response.status_code == 201
    row = await stored(db, device.id)
    assert (row.eth0, row.wlan0, row.service_port) == ("10.1.1.1", "10.2.2.2", 2222)
