import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.security import PasswordHashing, hash_token
from master_server.models import (
    Client,
    Command,
    Event,
    Heartbeat,
    User,
    UserClient,
    UserRole,
)
from master_server.models.base import utcnow
from tests.clients.factories import create_client, create_command
from tests.fixtures.app import create_user, login

CLIENT_FIELDS = {
    "id",
    "name",
    "description",
    "status",
    "created_at",
    "registered_at",
    "last_seen_at",
    "eth0",
    "wlan0",
    "service_port",
}


@pytest.fixture
async def bob(db: AsyncSession, hashing: PasswordHashing) -> User:
    return await create_user(db, hashing, username="bob", password="bob-password-1")


async def count(db: AsyncSession, model: type, **where: object) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    total = await db.scalar(query)
    await db.commit()
    return total or 0


# --- create ---------------------------------------------------------------


async def test_an_admin_creates_a_client_with_a_one_time_provision_key(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    response = await client.post(
        app.url_path_for("create_client"),
        json={"name": "pi-kitchen", "description": "by the fridge"},
        headers=admin_headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CLIENT_FIELDS | {"assigned_user_ids", "provision_key"}
    assert body["name"] == "pi-kitchen"
    assert body["description"] == "by the fridge"
    assert body["status"] == "unregistered"
    assert body["registered_at"] is None and body["last_seen_at"] is None
    assert body["eth0"] is None and body["wlan0"] is None
    assert body["service_port"] is None
    assert body["assigned_user_ids"] == []
    assert body["provision_key"].startswith("msp_")
    assert len(body["provision_key"]) >= 4 + 43

    stored = await db.get(Client, uuid.UUID(body["id"]))
    assert stored is not None
    assert stored.provision_key_hash == hash_token(body["provision_key"])
    assert stored.token_hash is None
    await db.commit()


async def test_a_created_client_without_description_has_an_empty_one(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict
) -> None:
    response = await client.post(
        app.url_path_for("create_client"), json={"name": "pi"}, headers=admin_headers
    )

    assert response.status_code == 201
    assert response.json()["description"] == ""


async def test_provision_keys_are_new_for_every_client(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict
) -> None:
    keys = set()
    for number in range(3):
        response = await client.post(
            app.url_path_for("create_client"),
            json={"name": f"pi-{number}"},
            headers=admin_headers,
        )
        keys.add(response.json()["provision_key"])

    assert len(keys) == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 129},
        {"name": 5},
        {"name": "pi", "description": "x" * 4097},
        {"name": "pi\u0000"},
        {"name": "pi", "token_hash": "abc"},
        {"name": "pi", "provision_key": "msp_mine"},
    ],
)
async def test_creating_a_client_refuses_invalid_input(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    body: dict,
) -> None:
    response = await client.post(
        app.url_path_for("create_client"), json=body, headers=admin_headers
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["details"]
    assert await count(db, Client) == 0


async def test_a_user_may_not_create_a_client(
    app: FastAPI, client: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await client.post(
        app.url_path_for("create_client"), json={"name": "pi"}, headers=user_headers
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_a_client_token_may_not_create_a_client(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("create_client"), json={"name": "pi"}, headers=device.headers
    )

    assert response.status_code == 401


async def test_creating_a_client_needs_a_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post(app.url_path_for("create_client"), json={"name": "x"})

    assert response.status_code == 401
    assert set(response.json()) >= {"error", "code"}


# --- list and get -------------------------------------------------------------


async def test_an_admin_lists_every_client_oldest_first_with_assignments(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
) -> None:
    first = await create_client(db, name="first", assigned_to=[user])
    second = await create_client(db, name="second", registered=False)

    response = await client.get(app.url_path_for("list_clients"), headers=admin_headers)

    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body] == [str(first.id), str(second.id)]
    assert body[0]["assigned_user_ids"] == [str(user.id)]
    assert body[1]["assigned_user_ids"] == []
    assert all(set(item) == CLIENT_FIELDS | {"assigned_user_ids"} for item in body)


async def test_a_user_lists_only_assigned_clients_without_assignments(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
    bob: User,
) -> None:
    mine = await create_client(db, name="mine", assigned_to=[user, bob])
    await create_client(db, name="bobs", assigned_to=[bob])
    await create_client(db, name="nobodys")

    response = await client.get(app.url_path_for("list_clients"), headers=user_headers)

    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body] == [str(mine.id)]
    assert set(body[0]) == CLIENT_FIELDS


async def test_the_client_list_is_filtered_by_status(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    never = await create_client(db, name="never", registered=False)
    online = await create_client(db, name="online", last_seen_at=utcnow())
    stale = await create_client(
        db, name="stale", last_seen_at=utcnow() - timedelta(hours=1)
    )
    silent = await create_client(db, name="silent")
    url = app.url_path_for("list_clients")

    async def ids(status: str) -> list[str]:
        response = await client.get(
            url, params={"status": status}, headers=admin_headers
        )
        assert response.status_code == 200
        assert {item["status"] for item in response.json()} <= {status}
        return [item["id"] for item in response.json()]

    assert await ids("unregistered") == [str(never.id)]
    assert await ids("online") == [str(online.id)]
    assert await ids("offline") == [str(stale.id), str(silent.id)]


async def test_a_filtered_list_shows_every_client_with_the_status_it_was_picked_by(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A clock that moves ten minutes each time the listing reads it, as if
    # the request took that long: judged at two times, a client just seen
    # would be picked as online and shown as offline.
    readings = iter(range(1_000))
    real_utcnow = utcnow
    monkeypatch.setattr(
        "master_server.clients.router.utcnow",
        lambda: real_utcnow() + timedelta(minutes=10 * next(readings)),
    )
    await create_client(db, name="seen", last_seen_at=utcnow())

    response = await client.get(
        app.url_path_for("list_clients"),
        params={"status": "online"},
        headers=admin_headers,
    )

    assert response.status_code == 200
    assert [item["status"] for item in response.json()] == ["online"]


@pytest.mark.parametrize(
    "params",
    [{"status": "sleeping"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}],
)
async def test_listing_clients_refuses_bad_query_parameters(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict, params: dict
) -> None:
    response = await client.get(
        app.url_path_for("list_clients"), params=params, headers=admin_headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_the_client_list_pages_with_limit_and_offset(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    made = [await create_client(db, name=f"pi-{n}") for n in range(5)]

    response = await client.get(
        app.url_path_for("list_clients"),
        params={"limit": 2, "offset": 1},
        headers=admin_headers,
    )

    assert [item["id"] for item in response.json()] == [
        str(made[1].id),
        str(made[2].id),
    ]


async def test_a_client_list_never_shows_secrets(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    pending = await create_client(db, registered=False)

    response = await client.get(app.url_path_for("list_clients"), headers=admin_headers)

    text = response.text
    assert device.token is not None and device.token not in text
    assert pending.provision_key is not None and pending.provision_key not in text
    assert hash_token(device.token) not in text
    assert hash_token(pending.provision_key) not in text


async def test_an_admin_gets_one_client_with_its_assignments(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
    bob: User,
) -> None:
    device = await create_client(db, assigned_to=[bob, user])

    response = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)), headers=admin_headers
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(device.id)
    assert response.json()["assigned_user_ids"] == [str(bob.id), str(user.id)]


async def test_an_assigned_user_gets_the_client_without_assignments(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)), headers=user_headers
    )

    assert response.status_code == 200
    assert set(response.json()) == CLIENT_FIELDS


async def test_an_unknown_client_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict
) -> None:
    response = await client.get(
        app.url_path_for("get_client", client_id=str(uuid.uuid4())),
        headers=admin_headers,
    )

    assert response.status_code == 404
    assert response.json() == {"error": "client not found", "code": "client_not_found"}


async def test_a_malformed_client_id_is_invalid_input(
    client: httpx.AsyncClient, admin_headers: dict
) -> None:
    response = await client.get("/clients/not-a-uuid", headers=admin_headers)

    assert response.status_code == 422


async def test_a_client_token_may_not_read_client_records(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)

    one = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)),
        headers=device.headers,
    )
    every = await client.get(app.url_path_for("list_clients"), headers=device.headers)

    assert one.status_code == 401
    assert every.status_code == 401


async def test_presence_follows_the_heartbeat_timeout(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    timeout = app.state.settings.heartbeat_timeout
    fresh = await create_client(
        db, last_seen_at=utcnow() - timedelta(seconds=timeout - 5)
    )
    stale = await create_client(
        db, last_seen_at=utcnow() - timedelta(seconds=timeout + 5)
    )

    async def status_of(client_id: uuid.UUID) -> str:
        response = await client.get(
            app.url_path_for("get_client", client_id=str(client_id)),
            headers=admin_headers,
        )
        status: str = response.json()["status"]
        return status

    assert await status_of(fresh.id) == "online"
    assert await status_of(stale.id) == "offline"


# --- network ------------------------------------------------------------------


async def test_the_client_sets_its_own_network(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)

    response = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={"eth0": "192.0.2.10", "wlan0": "::1", "service_port": 8443},
        headers=device.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["eth0"], body["wlan0"], body["service_port"]) == (
        "192.0.2.10",
        "::1",
        8443,
    )
    assert "assigned_user_ids" not in body


async def test_a_network_update_changes_only_the_fields_present(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    url = app.url_path_for("update_client_network", client_id=str(device.id))
    await client.patch(
        url,
        json={"eth0": "10.0.0.2", "wlan0": "10.0.0.3", "service_port": 22},
        headers=admin_headers,
    )

    cleared = await client.patch(url, json={"wlan0": None}, headers=admin_headers)
    unchanged = await client.patch(url, json={}, headers=admin_headers)

    assert cleared.status_code == 200
    for body in (cleared.json(), unchanged.json()):
        assert (body["eth0"], body["wlan0"], body["service_port"]) == (
            "10.0.0.2",
            None,
            22,
        )
    assert "assigned_user_ids" in cleared.json()


async def test_ipv6_addresses_are_stored_in_canonical_form(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)

    response = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={"eth0": "2001:0DB8:0000:0000:0000:0000:0000:0001"},
        headers=admin_headers,
    )

    assert response.json()["eth0"] == "2001:db8::1"


@pytest.mark.parametrize(
    "body",
    [
        {"eth0": "999.1.1.1"},
        {"eth0": "1.2.3"},
        {"eth0": "01.2.3.4"},
        {"eth0": "localhost"},
        {"eth0": ""},
        {"eth0": 3232235777},
        {"wlan0": "fe80::1%wlan0"},
        {"wlan0": "::g"},
        {"service_port": 0},
        {"service_port": 65536},
        {"service_port": -1},
        {"service_port": True},
        {"service_port": "80"},
        {"service_port": 80.0},
        {"service_port": 80.5},
        {"mac": "00:11:22:33:44:55"},
    ],
)
async def test_a_network_update_refuses_invalid_values(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    body: dict,
) -> None:
    device = await create_client(db)

    response = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json=body,
        headers=admin_headers,
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    stored = await db.get(Client, device.id, populate_existing=True)
    assert stored is not None
    assert (stored.eth0, stored.wlan0, stored.service_port) == (None, None, None)
    await db.commit()


@pytest.mark.parametrize("port", [1, 65535])
async def test_ports_at_the_edges_of_the_range_are_accepted(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    port: int,
) -> None:
    device = await create_client(db)

    response = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={"service_port": port},
        headers=admin_headers,
    )

    assert response.status_code == 200
    assert response.json()["service_port"] == port


async def test_an_assigned_user_may_not_change_the_network(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={"eth0": "10.0.0.1"},
        headers=user_headers,
    )

    assert response.status_code == 403
    stored = await db.get(Client, device.id)
    assert stored is not None and stored.eth0 is None
    await db.commit()


# --- delete -------------------------------------------------------------------


async def test_deleting_a_client_takes_everything_of_it_along(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    admin_headers: dict,
    user: User,
) -> None:
    doomed = await create_client(db, name="doomed", assigned_to=[user])
    kept = await create_client(db, name="kept", assigned_to=[user])
    for target in (doomed, kept):
        await create_command(db, target.id, created_by=admin.id)
        db.add(Event(client_id=target.id, level="info", message="boot"))
        db.add(Heartbeat(client_id=target.id, uptime_s=1.0))
    await db.commit()

    response = await client.delete(
        app.url_path_for("delete_client", client_id=str(doomed.id)),
        headers=admin_headers,
    )

    assert response.status_code == 204
    assert response.content == b""
    for model in (Command, Event, Heartbeat, UserClient):
        assert await count(db, model, client_id=doomed.id) == 0
        assert await count(db, model, client_id=kept.id) == 1
    assert await count(db, Client, id=doomed.id) == 0
    again = await client.get(
        app.url_path_for("get_client", client_id=str(doomed.id)),
        headers=admin_headers,
    )
    assert again.status_code == 404


async def test_a_deleted_clients_token_stops_working_at_once(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    network_url = app.url_path_for("update_client_network", client_id=str(device.id))
    before = await client.patch(network_url, json={}, headers=device.headers)

    await client.delete(
        app.url_path_for("delete_client", client_id=str(device.id)),
        headers=admin_headers,
    )
    after = await client.patch(network_url, json={}, headers=device.headers)

    assert before.status_code == 200
    assert after.status_code == 401
    assert after.json()["code"] == "invalid_token"


async def test_an_assigned_user_may_not_delete_the_client(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.delete(
        app.url_path_for("delete_client", client_id=str(device.id)),
        headers=user_headers,
    )

    assert response.status_code == 403
    assert await count(db, Client, id=device.id) == 1


async def test_deleting_an_unknown_client_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict
) -> None:
    response = await client.delete(
        app.url_path_for("delete_client", client_id=str(uuid.uuid4())),
        headers=admin_headers,
    )

    assert response.status_code == 404


# --- assignments ----------------------------------------------------------------


async def test_assigning_a_user_shows_them_the_client(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db)
    url = app.url_path_for("get_client", client_id=str(device.id))
    before = await client.get(url, headers=user_headers)

    response = await client.post(
        app.url_path_for("assign_user", client_id=str(device.id)),
        json={"user_id": str(user.id)},
        headers=admin_headers,
    )

    assert before.status_code == 404
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(url, headers=user_headers)).status_code == 200


async def test_assigning_twice_is_the_same_as_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
) -> None:
    device = await create_client(db)
    url = app.url_path_for("assign_user", client_id=str(device.id))

    responses = [
        await client.post(url, json={"user_id": str(user.id)}, headers=admin_headers)
        for _ in range(2)
    ]
    raced = await asyncio.gather(
        *[
            client.post(url, json={"user_id": str(user.id)}, headers=admin_headers)
            for _ in range(5)
        ]
    )

    assert [r.status_code for r in [*responses, *raced]] == [204] * 7
    assert await count(db, UserClient, client_id=device.id) == 1


async def test_assigning_an_unknown_user_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("assign_user", client_id=str(device.id)),
        json={"user_id": str(uuid.uuid4())},
        headers=admin_headers,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert await count(db, UserClient) == 0


async def test_assigning_to_an_unknown_client_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict, user: User
) -> None:
    response = await client.post(
        app.url_path_for("assign_user", client_id=str(uuid.uuid4())),
        json={"user_id": str(user.id)},
        headers=admin_headers,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"


@pytest.mark.parametrize(
    "body", [{}, {"user_id": "alice"}, {"user_id": None}, {"user_id": 1, "x": 1}]
)
async def test_assigning_refuses_a_malformed_body(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    body: dict,
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("assign_user", client_id=str(device.id)),
        json=body,
        headers=admin_headers,
    )

    assert response.status_code == 422


async def test_an_admin_may_be_assigned_harmlessly(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    admin_headers: dict,
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("assign_user", client_id=str(device.id)),
        json={"user_id": str(admin.id)},
        headers=admin_headers,
    )

    assert response.status_code == 204
    listed = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)),
        headers=admin_headers,
    )
    assert listed.json()["assigned_user_ids"] == [str(admin.id)]


async def test_unassigning_a_user_hides_the_client_from_them(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.delete(
        app.url_path_for(
            "unassign_user", client_id=str(device.id), user_id=str(user.id)
        ),
        headers=admin_headers,
    )

    assert response.status_code == 204
    after = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)), headers=user_headers
    )
    assert after.status_code == 404


async def test_unassigning_a_user_who_is_not_assigned_is_not_found(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
) -> None:
    device = await create_client(db)

    for user_id in (user.id, uuid.uuid4()):
        response = await client.delete(
            app.url_path_for(
                "unassign_user", client_id=str(device.id), user_id=str(user_id)
            ),
            headers=admin_headers,
        )
        assert response.status_code == 404
        assert response.json()["code"] == "assignment_not_found"


async def test_deleting_a_user_ends_their_assignments(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    user: User,
) -> None:
    device = await create_client(db, assigned_to=[user])

    await client.delete(
        app.url_path_for("delete_user", user_id=str(user.id)), headers=admin_headers
    )
    response = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)),
        headers=admin_headers,
    )

    assert response.json()["assigned_user_ids"] == []


# --- provision key ----------------------------------------------------------------


async def test_a_new_provision_key_revokes_the_old_key_and_the_token(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    unregistered = await create_client(db, name="fresh", registered=False)
    registered = await create_client(db, name="used")
    register_url = app.url_path_for("register_client")

    new_keys = {}
    for target in (unregistered, registered):
        response = await client.post(
            app.url_path_for("regenerate_provision_key", client_id=str(target.id)),
            headers=admin_headers,
        )
        assert response.status_code == 200
        assert set(response.json()) == {"provision_key"}
        new_keys[target.id] = response.json()["provision_key"]

    assert new_keys[unregistered.id].startswith("msp_")
    assert new_keys[unregistered.id] != unregistered.provision_key
    old_key = await client.post(
        register_url, json={"provision_key": unregistered.provision_key}
    )
    assert old_key.status_code == 401
    old_token = await client.patch(
        app.url_path_for("update_client_network", client_id=str(registered.id)),
        json={},
        headers=registered.headers,
    )
    assert old_token.status_code == 401


async def test_a_client_registers_again_with_its_new_key(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    first = await db.get(Client, device.id)
    assert first is not None and first.registered_at is not None
    first_registered_at = first.registered_at
    await db.commit()
    key = (
        await client.post(
            app.url_path_for("regenerate_provision_key", client_id=str(device.id)),
            headers=admin_headers,
        )
    ).json()["provision_key"]

    response = await client.post(
        app.url_path_for("register_client"), json={"provision_key": key}
    )

    assert response.status_code == 201
    assert response.json()["client_id"] == str(device.id)
    new_token = response.json()["token"]
    assert new_token != device.token
    network = await client.patch(
        app.url_path_for("update_client_network", client_id=str(device.id)),
        json={},
        headers={"Authorization": f"Bearer {new_token}"},
    )
    assert network.status_code == 200
    registered_at = datetime.fromisoformat(network.json()["registered_at"])
    assert registered_at > first_registered_at


async def test_a_user_session_never_sees_the_provision_key_of_a_client(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.post(
        app.url_path_for("regenerate_provision_key", client_id=str(device.id)),
        headers=user_headers,
    )

    assert response.status_code == 403
    assert "provision_key" not in response.json()
    stored = await db.get(Client, device.id)
    assert stored is not None and stored.provision_key_hash is None
    await db.commit()


async def test_a_second_admin_sees_the_same_clients(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    hashing: PasswordHashing,
    admin_headers: dict,
) -> None:
    await create_user(
        db, hashing, username="root2", password="root2-password", role=UserRole.ADMIN
    )
    device = await create_client(db)
    headers = await login(client, "root2", "root2-password")

    response = await client.get(
        app.url_path_for("get_client", client_id=str(device.id)), headers=headers
    )

    assert response.status_code == 200
    assert "assigned_user_ids" in response.json()
