"""Races against a real `master-server` process, over real sockets.

In-process ASGI tests may serialize more than a server does; here requests
really overlap, and on PostgreSQL they are spread over several worker
processes, each with its own connection pool.
"""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fixtures.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = ("root", "root-password-1")


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    server.bootstrap_admin(*ADMIN)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def admin_headers(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        "/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def new_provision_key(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await http.post("/clients", json={"name": "pi"}, headers=headers)
    assert response.status_code == 201, response.text
    key: str = response.json()["provision_key"]
    return key


async def test_twenty_concurrent_polls_deliver_fifty_commands_exactly_once(
    http: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(http)
    key = await new_provision_key(http, headers)
    registered = (
        await http.post("/clients/register", json={"provision_key": key})
    ).json()
    client_id = registered["client_id"]
    device = {"Authorization": f"Bearer {registered['token']}"}
    created = set()
    for number in range(50):
        response = await http.post(
            f"/clients/{client_id}/commands",
            json={"command": "echo", "payload": {"n": number}},
            headers=headers,
        )
        assert response.status_code == 201
        created.add(response.json()["id"])

    responses = await asyncio.gather(
        *[
            http.get(
                f"/clients/{client_id}/commands",
                params={"limit": 5},
                headers=device,
            )
            for _ in range(20)
        ]
    )

    assert {response.status_code for response in responses} == {200}
    delivered = [item["id"] for response in responses for item in response.json()]
    assert len(delivered) == len(set(delivered)) == 50
    assert set(delivered) == created
    listed = await http.get(
        f"/clients/{client_id}/commands", params={"limit": 100}, headers=headers
    )
    assert {item["status"] for item in listed.json()} == {"sent"}


async def test_concurrent_registrations_with_one_key_give_exactly_one_token(
    http: httpx.AsyncClient, server: ServerProcess
) -> None:
    headers = await admin_headers(http)
    keys = [await new_provision_key(http, headers) for _ in range(5)]

    responses = await asyncio.gather(
        *[
            http.post("/clients/register", json={"provision_key": key})
            for key in keys
            for _ in range(4)
        ]
    )

    for index in range(0, len(responses), 4):
        statuses = sorted(r.status_code for r in responses[index : index + 4])
        assert statuses == [201, 401, 401, 401]
    tokens = {r.json()["token"] for r in responses if r.status_code == 201}
    assert len(tokens) == 5
    logged = server.log_path.read_text()
    assert "client.registered" in logged
    for secret in [*keys, *tokens]:
        assert secret not in logged
        assert secret.split("_", 1)[1] not in logged
