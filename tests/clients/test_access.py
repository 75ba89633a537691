"""Per-object authorization on every client sub-resource.

A user gets 404 for every client that is not assigned to them, on every path
under it, exactly as for a client that does not exist; a client token gets 404
on another client's paths; and none of those requests changes anything.
Telemetry endpoints are part of the matrix once their routers are mounted.
"""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.models import (
    Client,
    Command,
    CommandStatus,
    Heartbeat,
    User,
    UserClient,
)
from tests.clients.factories import ProvisionedClient, create_client, create_command


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # {client}, {command} and {user} are filled in per test
    body: dict[str, Any] | None = None

    def url(self, **ids: object) -> str:
        return self.path.format(**{key: str(value) for key, value in ids.items()})

    async def send(
        self, http: httpx.AsyncClient, headers: dict[str, str], **ids: object
    ) -> httpx.Response:
        return await http.request(
            self.method, self.url(**ids), json=self.body, headers=headers
        )


TELEMETRY_PATHS = {
    "/clients/{client_id}/events",
    "/clients/{client_id}/status",
    "/clients/{client_id}/heartbeat",
}

USER_CALLS = {
    "get client": Call("GET", "/clients/{client}"),
    "update network": Call("PATCH", "/clients/{client}/network", {"eth0": "10.0.0.9"}),
    "delete client": Call("DELETE", "/clients/{client}"),
    "assign": Call("POST", "/clients/{client}/assign", {"user_id": "{user}"}),
    "unassign": Call("DELETE", "/clients/{client}/assign/{user}"),
    "regenerate provision key": Call("POST", "/clients/{client}/provision-key"),
    "list events": Call("GET", "/clients/{client}/events"),
    "get status": Call("GET", "/clients/{client}/status"),
    "create command": Call("POST", "/clients/{client}/commands", {"command": "x"}),
    "list commands": Call("GET", "/clients/{client}/commands"),
}

CLIENT_TOKEN_CALLS = {
    "update network": Call("PATCH", "/clients/{client}/network", {"eth0": "10.0.0.9"}),
    "poll commands": Call("GET", "/clients/{client}/commands"),
    "ack command": Call(
        "POST", "/clients/{client}/commands/{command}/ack", {"status": "acked"}
    ),
    "send heartbeat": Call("POST", "/clients/{client}/heartbeat", {"uptime_s": 1}),
    "record event": Call(
        "POST", "/clients/{client}/events", {"level": "info", "message": "hi"}
    ),
}


def skip_unless_mounted(app: FastAPI, call: Call) -> None:
    template = call.path.replace("{client}", "{client_id}")
    mounted = app.openapi()["paths"]
    if template not in mounted and template in TELEMETRY_PATHS:
        pytest.skip(f"{template} is not mounted yet")


async def snapshot(db: AsyncSession, client_id: uuid.UUID) -> tuple[Any, ...]:
    """Everything a request could change about a client."""
    client = await db.scalar(
        select(Client)
        .where(Client.id == client_id)
        .execution_options(populate_existing=True)
    )
    commands = (
        await db.execute(
            select(Command.id, Command.status, Command.sent_at, Command.result)
            .where(Command.client_id == client_id)
            .order_by(Command.seq)
        )
    ).all()
    assigned = (
        await db.scalars(
            select(UserClient.user_id).where(UserClient.client_id == client_id)
        )
    ).all()
    assert client is not None
    state = (
        client.provision_key_hash,
        client.token_hash,
        client.eth0,
        await db.scalar(
            select(func.max(Heartbeat.created_at)).where(
                Heartbeat.client_id == client_id
            )
        ),
        tuple(commands),
        tuple(assigned),
    )
    await db.commit()
    return state


def body_with(call: Call, user_id: uuid.UUID) -> Call:
    if call.body is None:
        return call
    body = {
        key: str(user_id) if value == "{user}" else value
        for key, value in call.body.items()
    }
    return Call(call.method, call.path, body)


@pytest.mark.parametrize("name", USER_CALLS)
async def test_a_user_gets_404_on_every_path_of_a_client_not_assigned_to_them(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    user: User,
    user_headers: dict[str, str],
    name: str,
) -> None:
    call = body_with(USER_CALLS[name], user.id)
    skip_unless_mounted(app, call)
    other = await create_client(db)
    await create_command(db, other.id, created_by=admin.id)
    before = await snapshot(db, other.id)

    hidden = await call.send(client, user_headers, client=other.id, user=user.id)
    missing = await call.send(client, user_headers, client=uuid.uuid4(), user=user.id)

    assert hidden.status_code == 404, hidden.text
    assert hidden.json() == {"error": "client not found", "code": "client_not_found"}
    assert missing.status_code == 404
    assert missing.json() == hidden.json()
    assert await snapshot(db, other.id) == before


@pytest.mark.parametrize("name", USER_CALLS)
async def test_an_admin_gets_404_on_every_path_of_a_client_that_does_not_exist(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: User,
    admin_headers: dict[str, str],
    name: str,
) -> None:
    call = body_with(USER_CALLS[name], admin.id)
    skip_unless_mounted(app, call)

    response = await call.send(
        client, admin_headers, client=uuid.uuid4(), user=admin.id
    )

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("get client", 200),
        ("update network", 403),
        ("delete client", 403),
        ("assign", 403),
        ("unassign", 403),
        ("regenerate provision key", 403),
        ("list events", 200),
        ("get status", 200),
        ("create command", 201),
        ("list commands", 200),
    ],
)
async def test_an_assigned_user_may_read_and_command_but_not_administer(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict[str, str],
    name: str,
    expected: int,
) -> None:
    call = body_with(USER_CALLS[name], user.id)
    skip_unless_mounted(app, call)
    mine = await create_client(db, assigned_to=[user])

    response = await call.send(client, user_headers, client=mine.id, user=user.id)

    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.json()["code"] == "forbidden"


async def test_a_user_session_gets_401_on_the_device_only_ack(
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    admin_headers: dict[str, str],
    user: User,
    user_headers: dict[str, str],
) -> None:
    mine = await create_client(db, assigned_to=[user])
    other = await create_client(db, name="other")
    command_ids = {
        target.id: await create_command(
            db, target.id, status=CommandStatus.SENT, created_by=admin.id
        )
        for target in (mine, other)
    }
    call = CLIENT_TOKEN_CALLS["ack command"]

    answers = [
        await call.send(
            client, headers, client=target.id, command=command_ids[target.id]
        )
        for headers in (user_headers, admin_headers)
        for target in (mine, other)
    ]

    assert [answer.status_code for answer in answers] == [401] * 4
    assert {answer.json()["code"] for answer in answers} == {"wrong_token_kind"}


@pytest.mark.parametrize("name", CLIENT_TOKEN_CALLS)
async def test_a_client_token_gets_404_on_another_clients_paths_and_changes_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    name: str,
) -> None:
    call = CLIENT_TOKEN_CALLS[name]
    skip_unless_mounted(app, call)
    intruder = await create_client(db, name="intruder")
    victim = await create_client(db, name="victim")
    await create_command(db, victim.id, created_by=admin.id)
    sent = await create_command(
        db, victim.id, status=CommandStatus.SENT, created_by=admin.id
    )
    before = await snapshot(db, victim.id)

    response = await call.send(client, intruder.headers, client=victim.id, command=sent)

    assert response.status_code == 404, response.text
    assert response.json()["code"] == "client_not_found"
    assert await snapshot(db, victim.id) == before


async def test_a_client_cannot_ack_another_clients_command_through_its_own_path(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin: User
) -> None:
    intruder = await create_client(db, name="intruder")
    victim = await create_client(db, name="victim")
    sent = await create_command(
        db, victim.id, status=CommandStatus.SENT, created_by=admin.id
    )
    before = await snapshot(db, victim.id)

    response = await CLIENT_TOKEN_CALLS["ack command"].send(
        client, intruder.headers, client=intruder.id, command=sent
    )

    assert response.status_code == 404
    assert response.json()["code"] == "command_not_found"
    assert await snapshot(db, victim.id) == before


@pytest.mark.parametrize(
    "call",
    [
        Call("GET", "/clients"),
        Call("POST", "/clients", {"name": "x"}),
        Call("GET", "/clients/{client}"),
        Call("DELETE", "/clients/{client}"),
        Call("POST", "/clients/{client}/provision-key"),
        Call("POST", "/clients/{client}/assign", {"user_id": str(uuid.uuid4())}),
        Call("POST", "/clients/{client}/commands", {"command": "reboot"}),
        Call("GET", "/users"),
        Call("GET", "/auth/me"),
    ],
    ids=lambda call: f"{call.method} {call.path}",
)
async def test_a_client_token_gets_401_on_user_endpoints_even_for_itself(
    client: httpx.AsyncClient, db: AsyncSession, call: Call
) -> None:
    device: ProvisionedClient = await create_client(db)
    before = await snapshot(db, device.id)

    response = await call.send(client, device.headers, client=device.id)

    assert response.status_code == 401
    assert response.json()["code"] == "wrong_token_kind"
    assert await snapshot(db, device.id) == before


@pytest.mark.parametrize(
    "token", ["", "garbage", "mss_unknown", "msc_unknown", "msp_unknown"]
)
async def test_an_unknown_token_is_401_on_client_paths(
    client: httpx.AsyncClient, db: AsyncSession, token: str
) -> None:
    device = await create_client(db)

    response = await client.get(
        f"/clients/{device.id}/commands",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 401
    assert set(response.json()) >= {"error", "code"}
