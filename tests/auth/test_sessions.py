"""Session tokens: /auth/me, logout, expiry, and tokens of the wrong kind."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text, update

from master_server.core.db import Database
from master_server.core.security import TokenKind, hash_token, new_token
from master_server.models import Client, Session, User
from tests.fixtures.app import USER_PASSWORD, login


async def test_me_is_the_logged_in_user(
    client: httpx.AsyncClient, user: User, user_headers: dict[str, str]
) -> None:
    response = await client.get("/auth/me", headers=user_headers)

    assert response.status_code == 200
    assert response.json() == {
        "id": str(user.id),
        "username": "alice",
        "role": "user",
        "otp_enabled": False,
        "disabled": False,
        "created_at": response.json()["created_at"],
    }
    assert datetime.fromisoformat(response.json()["created_at"]).tzinfo is not None


async def test_logout_ends_the_session_at_once(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post("/auth/logout", headers=user_headers)
    after = await client.get("/auth/me", headers=user_headers)
    again = await client.post("/auth/logout", headers=user_headers)

    assert response.status_code == 204
    assert response.content == b""
    assert after.status_code == 401
    assert after.json()["code"] == "invalid_token"
    assert again.status_code == 401


async def test_logout_leaves_the_users_other_sessions_alone(
    client: httpx.AsyncClient, user: User
) -> None:
    first = await login(client, "alice", USER_PASSWORD)
    second = await login(client, "alice", USER_PASSWORD)

    await client.post("/auth/logout", headers=first)

    assert (await client.get("/auth/me", headers=second)).status_code == 200


async def test_an_expired_session_gets_401(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    headers = await login(client, "alice", USER_PASSWORD)
    assert (await client.get("/auth/me", headers=headers)).status_code == 200

    async with database.engine.begin() as connection:
        await connection.execute(
            update(Session).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = await client.get("/auth/me", headers=headers)

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid or expired token",
        "code": "invalid_token",
    }


async def test_a_login_clears_the_users_expired_sessions(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    expired = await login(client, "alice", USER_PASSWORD)
    async with database.engine.begin() as connection:
        await connection.execute(
            update(Session).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    current = await login(client, "alice", USER_PASSWORD)

    async with database.engine.connect() as connection:
        stored = (await connection.scalars(select(Session.token_hash))).all()
    assert stored == [hash_token(current["Authorization"].removeprefix("Bearer "))]
    assert hash_token(expired["Authorization"].removeprefix("Bearer ")) not in stored


async def test_a_session_of_a_user_disabled_behind_the_apis_back_stops_working(
    client: httpx.AsyncClient,
    user: User,
    user_headers: dict[str, str],
    database: Database,
) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(
            update(User).where(User.id == user.id).values(is_disabled=True)
        )

    assert (await client.get("/auth/me", headers=user_headers)).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Bearer mss_not-a-real-token",
        "Bearer msp_not-a-real-key",
        "Bearer something-without-a-prefix",
        "Bearer mss_" + "x" * 5000,
    ],
)
async def test_a_missing_or_unknown_token_gets_401_in_the_error_shape(
    client: httpx.AsyncClient, user: User, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await client.get("/auth/me", headers=headers)

    assert response.status_code == 401
    assert set(response.json()) == {"error", "code"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_client_token_gets_401_on_user_endpoints(
    client: httpx.AsyncClient, database: Database
) -> None:
    token = new_token(TokenKind.CLIENT)
    async with database.sessionmaker() as session:
        session.add(Client(name="pi-1", token_hash=hash_token(token)))
        await session.commit()
    headers = {"Authorization": f"Bearer {token}"}

    for method, path in [
        ("GET", "/auth/me"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/otp/setup"),
        ("GET", "/users"),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "wrong_token_kind"


async def test_the_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    token = user_headers["Authorization"].removeprefix("Bearer ")

    response = await client.get(
        "/auth/me", headers={"Authorization": f"bearer {token}"}
    )

    assert response.status_code == 200


async def test_a_token_is_looked_up_by_its_hash_only(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    headers = await login(client, "alice", USER_PASSWORD)
    token = headers["Authorization"].removeprefix("Bearer ")

    # The stored hash used as a token is just another unknown token.
    async with database.engine.connect() as connection:
        stored = await connection.scalar(text("SELECT token_hash FROM sessions"))
    response = await client.get(
        "/auth/me", headers={"Authorization": f"Bearer mss_{stored}"}
    )

    assert stored == hash_token(token)
    assert response.status_code == 401
