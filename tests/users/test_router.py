"""The users API: who may call it, and creating, reading, changing and deleting."""

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.db import Database
from master_server.core.security import (
    PasswordHashing,
    TokenKind,
    hash_token,
    new_token,
)
from master_server.models import Client, Session, User, UserClient
from tests.fixtures.app import ADMIN_PASSWORD, USER_PASSWORD, create_user, login

USER_FIELDS = {"id", "username", "role", "otp_enabled", "disabled", "created_at"}


async def count(database: Database, model: type[object], **where: object) -> int:
    statement = select(func.count()).select_from(model)  # type: ignore[arg-type]
    for name, value in where.items():
        statement = statement.where(getattr(model, name) == value)
    async with database.engine.connect() as connection:
        total: int = await connection.scalar(statement)
    return total


async def create_via_api(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    username: str = "bob",
    password: str = "bob-password",
    **extra: object,
) -> httpx.Response:
    return await client.post(
        "/users",
        headers=headers,
        json={"username": username, "password": password, **extra},
    )


# Access


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/users"),
        ("GET", "/users"),
        ("GET", "/users/{id}"),
        ("PATCH", "/users/{id}"),
        ("DELETE", "/users/{id}"),
    ],
)
async def test_a_user_session_gets_403_on_every_users_endpoint(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    database: Database,
    method: str,
    path: str,
) -> None:
    body = {"username": "bob", "password": "bob-password"} if method == "POST" else {}

    response = await client.request(
        method,
        path.format(id=user.id),
        headers=user_headers,
        json=body if method in {"POST", "PATCH"} else None,
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert await count(database, User, is_disabled=False) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/users"),
        ("GET", "/users"),
        ("GET", "/users/{id}"),
        ("PATCH", "/users/{id}"),
        ("DELETE", "/users/{id}"),
    ],
)
async def test_no_token_or_a_client_token_gets_401_on_every_users_endpoint(
    client: httpx.AsyncClient, admin: User, database: Database, method: str, path: str
) -> None:
    token = new_token(TokenKind.CLIENT)
    async with database.session() as session:
        session.add(Client(name="pi-1", token_hash=hash_token(token)))

    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        response = await client.request(
            method,
            path.format(id=admin.id),
            headers=headers,
            json={} if method in {"POST", "PATCH"} else None,
        )
        assert response.status_code == 401, headers
        assert set(response.json()) == {"error", "code"}


# Create


async def test_an_admin_creates_a_user(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await create_via_api(client, admin_headers, username="Bob")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["username"] == "Bob"
    assert body["role"] == "user"
    assert body["otp_enabled"] is False
    assert body["disabled"] is False
    uuid.UUID(body["id"])
    assert (await login(client, "bob", "bob-password"))["Authorization"]


async def test_an_admin_creates_another_admin(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await create_via_api(client, admin_headers, role="admin")

    assert response.status_code == 201
    assert response.json()["role"] == "admin"


@pytest.mark.parametrize("username", ["alice", "ALICE", "Alice"])
async def test_a_username_taken_ignoring_case_is_a_409(
    client: httpx.AsyncClient,
    user: User,
    admin_headers: dict[str, str],
    database: Database,
    username: str,
) -> None:
    response = await create_via_api(client, admin_headers, username=username)

    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    assert await count(database, User) == 2


async def test_two_concurrent_creations_of_one_username_make_one_user(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    responses = await asyncio.gather(
        create_via_api(client, admin_headers, username="bob"),
        create_via_api(client, admin_headers, username="BOB"),
    )

    assert sorted(response.status_code for response in responses) == [201, 409]
    assert await count(database, User) == 2


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("p" * 7, 422),
        ("p" * 8, 201),
        ("p" * 1024, 201),
        ("p" * 1025, 422),
        ("é" * 8, 201),
    ],
)
async def test_a_password_must_be_8_to_1024_characters(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    password: str,
    status: int,
) -> None:
    response = await create_via_api(client, admin_headers, password=password)

    assert response.status_code == status
    if status == 422:
        assert [d["field"] for d in response.json()["details"]] == ["password"]


async def test_a_long_password_is_compared_in_full(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    password = "x" * 1023 + "1"
    await create_via_api(client, admin_headers, password=password)

    wrong = await client.post(
        "/auth/login", json={"username": "bob", "password": "x" * 1023 + "2"}
    )

    assert wrong.status_code == 401
    assert (await login(client, "bob", password))["Authorization"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "bob", "password": "bob-password", "is_admin": True}, "is_admin"),
        ({"username": "bob", "password": "bob-password", "id": "x"}, "id"),
        ({"username": "bob", "password": "bob-password", "role": "root"}, "role"),
        ({"username": "bob"}, "password"),
        ({"password": "bob-password"}, "username"),
        ({"username": "", "password": "bob-password"}, "username"),
        ({"username": "b" * 65, "password": "bob-password"}, "username"),
        ({"username": "bob smith", "password": "bob-password"}, "username"),
        ({"username": "bob\x00", "password": "bob-password"}, "username"),
        ({"username": None, "password": "bob-password"}, "username"),
        ({"username": "bob", "password": 12345678}, "password"),
    ],
)
async def test_a_bad_or_unknown_field_at_create_is_a_422_naming_it(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    database: Database,
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.post("/users", headers=admin_headers, json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert field in {detail["field"] for detail in response.json()["details"]}
    assert await count(database, User) == 1


# Read


async def test_an_admin_lists_every_user_oldest_first(
    client: httpx.AsyncClient, admin: User, admin_headers: dict[str, str]
) -> None:
    for name in ("bob", "carol", "dave"):
        await create_via_api(client, admin_headers, username=name)

    response = await client.get("/users", headers=admin_headers)

    assert response.status_code == 200
    assert [u["username"] for u in response.json()] == ["admin", "bob", "carol", "dave"]
    for item in response.json():
        assert set(item) == USER_FIELDS


async def test_limit_and_offset_page_through_the_users(
    client: httpx.AsyncClient, admin: User, admin_headers: dict[str, str]
) -> None:
    for name in ("bob", "carol", "dave"):
        await create_via_api(client, admin_headers, username=name)

    first = await client.get("/users?limit=2", headers=admin_headers)
    second = await client.get("/users?limit=2&offset=2", headers=admin_headers)
    beyond = await client.get("/users?offset=10", headers=admin_headers)

    assert [u["username"] for u in first.json()] == ["admin", "bob"]
    assert [u["username"] for u in second.json()] == ["carol", "dave"]
    assert beyond.json() == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("offset=99999999999999999999999", "offset"),
    ],
)
async def test_a_bad_limit_or_offset_is_a_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], query: str, field: str
) -> None:
    response = await client.get(f"/users?{query}", headers=admin_headers)

    assert response.status_code == 422
    details = response.json()["details"]
    assert [(d["field"], d["location"]) for d in details] == [(field, "query")]


@pytest.mark.parametrize("query", ["limit=1", "limit=1000", "offset=0"])
async def test_limit_and_offset_at_their_bounds_are_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], query: str
) -> None:
    response = await client.get(f"/users?{query}", headers=admin_headers)

    assert response.status_code == 200


async def test_an_admin_gets_one_user(
    client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]
) -> None:
    response = await client.get(f"/users/{user.id}", headers=admin_headers)

    assert response.status_code == 200
    assert response.json()["id"] == str(user.id)
    assert response.json()["username"] == "alice"


async def test_an_unknown_user_id_is_a_404(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    unknown = uuid.uuid4()

    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method,
            f"/users/{unknown}",
            headers=admin_headers,
            json={} if method == "PATCH" else None,
        )
        assert response.status_code == 404, method
        assert response.json() == {"error": "user not found", "code": "user_not_found"}


@pytest.mark.parametrize("bad_id", ["123", "not-a-uuid", "00000000-0000-0000-0000"])
async def test_a_user_id_that_is_not_a_uuid_is_a_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], bad_id: str
) -> None:
    response = await client.get(f"/users/{bad_id}", headers=admin_headers)

    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "user_id"
    assert response.json()["details"][0]["location"] == "path"


# Change


async def test_a_patch_changes_the_role(
    client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"role": "admin"}
    )

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert (await client.get(f"/users/{user.id}", headers=admin_headers)).json()[
        "role"
    ] == "admin"


async def test_a_new_password_works_and_ends_the_users_sessions(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    response = await client.patch(
        f"/users/{user.id}",
        headers=admin_headers,
        json={"password": "a-brand-new-password"},
    )

    assert response.status_code == 200
    assert (await client.get("/auth/me", headers=user_headers)).status_code == 401
    old = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )
    assert old.status_code == 401
    assert await login(client, "alice", "a-brand-new-password")
    # Other users' sessions are untouched.
    assert (await client.get("/auth/me", headers=admin_headers)).status_code == 200


async def test_disabling_a_user_ends_their_sessions_and_logins(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
    database: Database,
) -> None:
    response = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"disabled": True}
    )

    assert response.status_code == 200
    assert response.json()["disabled"] is True
    assert await count(database, Session, user_id=user.id) == 0
    assert (await client.get("/auth/me", headers=user_headers)).status_code == 401
    refused = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )
    assert refused.json()["code"] == "invalid_credentials"


async def test_enabling_a_user_again_lets_them_log_in(
    client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]
) -> None:
    await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"disabled": True}
    )

    response = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"disabled": False}
    )

    assert response.json()["disabled"] is False
    assert await login(client, "alice", USER_PASSWORD)


async def test_a_role_change_keeps_the_users_sessions(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"role": "admin"}
    )

    me = await client.get("/auth/me", headers=user_headers)
    users = await client.get("/users", headers=user_headers)

    assert me.json()["role"] == "admin"
    assert users.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "renamed"}, "username"),
        ({"otp_enabled": False}, "otp_enabled"),
        ({"password_hash": "x"}, "password_hash"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 1025}, "password"),
        ({"role": "superuser"}, "role"),
        ({"disabled": "maybe"}, "disabled"),
        ({"disabled": "true"}, "disabled"),
        ({"disabled": 1}, "disabled"),
        ({"disabled": "on"}, "disabled"),
    ],
)
async def test_a_bad_or_unknown_field_at_patch_is_a_422_naming_it(
    client: httpx.AsyncClient,
    user: User,
    admin_headers: dict[str, str],
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.patch(f"/users/{user.id}", headers=admin_headers, json=body)

    assert response.status_code == 422
    assert field in {detail["field"] for detail in response.json()["details"]}
    assert (await client.get(f"/users/{user.id}", headers=admin_headers)).json()[
        "role"
    ] == "user"


async def test_a_refused_patch_changes_nothing(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    await client.patch(
        f"/users/{user.id}",
        headers=admin_headers,
        json={"password": "new-password-1", "role": "boss"},
    )

    assert (await client.get("/auth/me", headers=user_headers)).status_code == 200
    assert await login(client, "alice", USER_PASSWORD)


# Delete


async def test_deleting_a_user_ends_their_sessions_and_assignments(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
    database: Database,
) -> None:
    async with database.session() as session:
        device = Client(name="pi-1")
        session.add(device)
        await session.flush()
        session.add(UserClient(user_id=user.id, client_id=device.id))

    response = await client.delete(f"/users/{user.id}", headers=admin_headers)

    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/auth/me", headers=user_headers)).status_code == 401
    assert (
        await client.get(f"/users/{user.id}", headers=admin_headers)
    ).status_code == 404
    assert await count(database, Session, user_id=user.id) == 0
    assert await count(database, UserClient) == 0
    assert await count(database, Client) == 1
    again = await client.delete(f"/users/{user.id}", headers=admin_headers)
    assert again.status_code == 404


async def test_a_deleted_username_can_be_used_again(
    client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]
) -> None:
    await client.delete(f"/users/{user.id}", headers=admin_headers)

    response = await create_via_api(client, admin_headers, username="Alice")

    assert response.status_code == 201


# What responses never hold


async def test_no_users_response_holds_a_hash_or_secret(
    client: httpx.AsyncClient,
    db: AsyncSession,
    hashing: PasswordHashing,
    admin_headers: dict[str, str],
    database: Database,
) -> None:
    bob = await create_user(db, hashing, username="bob")
    await login(client, "bob", USER_PASSWORD)
    await client.post(
        "/auth/otp/setup", headers=await login(client, "bob", USER_PASSWORD)
    )
    async with database.engine.connect() as connection:
        stored = (
            await connection.execute(
                select(User.password_hash, User.otp_pending_secret).where(
                    User.id == bob.id
                )
            )
        ).one()
        token_hashes = (await connection.scalars(select(Session.token_hash))).all()
    secrets = [stored.password_hash, stored.otp_pending_secret, *token_hashes]

    responses = [
        await create_via_api(client, admin_headers, username="carol"),
        await client.get("/users", headers=admin_headers),
        await client.get(f"/users/{bob.id}", headers=admin_headers),
        await client.patch(f"/users/{bob.id}", headers=admin_headers, json={}),
    ]

    for response in responses:
        assert response.status_code in {200, 201}
        for secret in secrets:
            assert secret not in response.text
        for word in ("password", "hash", "secret", "otp_last_step"):
            assert word not in response.text


async def test_the_first_admin_logs_in_and_is_listed(
    client: httpx.AsyncClient, admin: User
) -> None:
    headers = await login(client, "ADMIN", ADMIN_PASSWORD)

    response = await client.get("/users", headers=headers)

    assert [u["id"] for u in response.json()] == [str(admin.id)]
