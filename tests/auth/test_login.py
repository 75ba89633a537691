"""POST /auth/login: the answer, the refusals, timing and rehashing."""

import asyncio
import base64
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.config import Settings
from master_server.core.db import Database
from master_server.core.security import PasswordHashing, hash_token
from master_server.models import Base, Session, User, UserRole
from tests.auth.helpers import AppClientFactory
from tests.fixtures.app import USER_PASSWORD, create_user
from tests.fixtures.database import make_settings

USER_FIELDS = {"id", "username", "role", "otp_enabled", "disabled", "created_at"}


async def stored_password_hash(database: Database, username: str) -> str:
    async with database.engine.connect() as connection:
        stored: str = await connection.scalar(
            select(User.password_hash).where(User.username_key == username.lower())
        )
    return stored


def parse_rfc3339(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no UTC offset"
    return parsed


async def test_a_login_answers_with_a_bearer_token_its_expiry_and_the_user(
    client: httpx.AsyncClient, user: User, settings: Settings
) -> None:
    before = datetime.now(UTC)

    response = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "token_type", "expires_at", "user"}
    assert body["token_type"] == "bearer"
    assert body["token"].startswith("mss_")
    expires_at = parse_rfc3339(body["expires_at"])
    expected = before + timedelta(seconds=settings.session_ttl)
    assert (
        expected - timedelta(seconds=5) <= expires_at <= expected + timedelta(seconds=5)
    )
    assert set(body["user"]) == USER_FIELDS
    assert body["user"]["id"] == str(user.id)
    assert body["user"]["username"] == "alice"
    assert body["user"]["role"] == "user"
    parse_rfc3339(body["user"]["created_at"])


async def test_the_session_lifetime_follows_master_session_ttl(
    app_client: AppClientFactory, user: User
) -> None:
    async with app_client(session_ttl=120) as http:
        response = await http.post(
            "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
        )

    expires_at = parse_rfc3339(response.json()["expires_at"])
    remaining = expires_at - datetime.now(UTC)
    assert timedelta(seconds=110) < remaining <= timedelta(seconds=120)


@pytest.mark.parametrize("username", ["alice", "ALICE", "aLiCe"])
async def test_usernames_match_ignoring_case(
    client: httpx.AsyncClient, db: AsyncSession, hashing: PasswordHashing, username: str
) -> None:
    await create_user(db, hashing, username="Alice")

    response = await client.post(
        "/auth/login", json={"username": username, "password": USER_PASSWORD}
    )

    assert response.status_code == 200
    assert response.json()["user"]["username"] == "Alice"


async def test_unknown_user_wrong_password_and_disabled_user_get_the_same_401(
    client: httpx.AsyncClient, db: AsyncSession, hashing: PasswordHashing
) -> None:
    await create_user(db, hashing, username="alice")
    disabled = await create_user(db, hashing, username="bob")
    disabled.is_disabled = True
    await db.commit()

    attempts = [
        {"username": "nobody", "password": USER_PASSWORD},
        {"username": "alice", "password": "wrong-password"},
        {"username": "bob", "password": USER_PASSWORD},
    ]
    responses = [await client.post("/auth/login", json=body) for body in attempts]

    for response in responses:
        assert response.status_code == 401
        assert response.json() == {
            "error": "invalid credentials",
            "code": "invalid_credentials",
        }
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_failed_login_writes_nothing(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    await client.post("/auth/login", json={"username": "alice", "password": "nope"})

    async with database.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM sessions")) == 0


async def test_a_login_with_a_nul_in_the_username_is_refused_not_a_500(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post(
        "/auth/login", json={"username": "ali\x00ce", "password": USER_PASSWORD}
    )

    assert response.status_code in {401, 422}
    assert response.json()["code"] in {"invalid_credentials", "validation_error"}


async def test_a_password_is_never_truncated(
    client: httpx.AsyncClient, db: AsyncSession, hashing: PasswordHashing
) -> None:
    password = "p" * 1023 + "a"
    await create_user(db, hashing, username="carol", password=password)

    wrong = await client.post(
        "/auth/login", json={"username": "carol", "password": "p" * 1023 + "b"}
    )
    right = await client.post(
        "/auth/login", json={"username": "carol", "password": password}
    )

    assert wrong.status_code == 401
    assert right.status_code == 200


async def test_each_login_gets_a_new_token_with_at_least_128_random_bits(
    client: httpx.AsyncClient, user: User
) -> None:
    credentials = {"username": "alice", "password": USER_PASSWORD}

    tokens = [
        (await client.post("/auth/login", json=credentials)).json()["token"]
        for _ in range(5)
    ]

    assert len(set(tokens)) == 5
    for token in tokens:
        assert token.startswith("mss_")
        random_part = base64.urlsafe_b64decode(token[4:] + "=" * (-len(token) % 4))
        assert len(random_part) * 8 >= 128


async def test_only_the_sha256_of_a_token_is_stored(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    response = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )
    token = response.json()["token"]

    async with database.engine.connect() as connection:
        stored = (await connection.scalars(select(Session.token_hash))).all()
        every_value = [
            str(value)
            for table in Base.metadata.sorted_tables
            for row in (await connection.execute(table.select())).all()
            for value in row
        ]
    assert stored == [hash_token(token)]
    assert not any(token in value or token[4:] in value for value in every_value)


async def test_a_password_is_rehashed_at_login_when_the_argon2_cost_changes(
    app_client: AppClientFactory, user: User, database: Database
) -> None:
    before = await stored_password_hash(database, "alice")
    assert "m=1024,t=1,p=1" in before

    async with app_client(argon2_time_cost=2, argon2_memory_cost=2048) as http:
        first = await http.post(
            "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
        )
        after = await stored_password_hash(database, "alice")
        second = await http.post(
            "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
        )

    assert first.status_code == second.status_code == 200
    assert "m=2048,t=2,p=1" in after
    assert await stored_password_hash(database, "alice") == after


async def test_a_password_is_not_rehashed_when_the_cost_is_unchanged(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    before = await stored_password_hash(database, "alice")

    await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )

    assert await stored_password_hash(database, "alice") == before


async def test_a_wrong_password_does_not_rehash(
    app_client: AppClientFactory, user: User, database: Database
) -> None:
    before = await stored_password_hash(database, "alice")

    async with app_client(argon2_time_cost=2) as http:
        await http.post("/auth/login", json={"username": "alice", "password": "nope"})

    assert await stored_password_hash(database, "alice") == before


async def _failed_login_seconds(http: httpx.AsyncClient, body: dict[str, str]) -> float:
    started = time.perf_counter()
    response = await http.post("/auth/login", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 401
    return elapsed


async def test_a_failed_login_costs_about_the_same_for_unknown_and_known_users(
    app_client: AppClientFactory, db: AsyncSession, database_url: str
) -> None:
    # Costly enough that Argon2 outweighs the rest of the request, cheap
    # enough to keep the test quick; this is about behaviour, not speed.
    cost = {"argon2_time_cost": 2, "argon2_memory_cost": 8192}
    hashing = PasswordHashing(make_settings(database_url, **cost))
    await create_user(db, hashing, username="alice")
    unknown = {"username": "nobody", "password": "wrong-password"}
    known = {"username": "alice", "password": "wrong-password"}

    async with app_client(**cost) as http:
        for body in (unknown, known):  # warm up both paths
            await _failed_login_seconds(http, body)
        # Alternating, so a burst of load on the machine hits both alike.
        unknown_seconds: list[float] = []
        known_seconds: list[float] = []
        for _ in range(12):
            unknown_seconds.append(await _failed_login_seconds(http, unknown))
            known_seconds.append(await _failed_login_seconds(http, known))

    ratio = statistics.mean(unknown_seconds) / statistics.mean(known_seconds)
    assert 0.5 < ratio < 2.0


async def test_a_disabled_user_cannot_log_in_even_with_the_right_password(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(
            update(User).where(User.id == user.id).values(is_disabled=True)
        )

    response = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD}
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": USER_PASSWORD},
        {"username": "", "password": USER_PASSWORD},
        {"username": "alice", "password": USER_PASSWORD, "remember_me": True},
        {"username": "alice", "password": "p" * 1025},
        {"username": 1, "password": USER_PASSWORD},
    ],
)
async def test_a_malformed_login_is_a_422_naming_the_field(
    client: httpx.AsyncClient, user: User, body: dict[str, object]
) -> None:
    response = await client.post("/auth/login", json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["details"]


async def test_an_admin_logs_in_like_anyone_else(
    client: httpx.AsyncClient, db: AsyncSession, hashing: PasswordHashing
) -> None:
    await create_user(db, hashing, username="root", role=UserRole.ADMIN)

    response = await client.post(
        "/auth/login", json={"username": "root", "password": USER_PASSWORD}
    )

    assert response.json()["user"]["role"] == "admin"


async def test_concurrent_logins_each_get_their_own_session(
    client: httpx.AsyncClient, user: User, database: Database
) -> None:
    credentials = {"username": "alice", "password": USER_PASSWORD}

    responses = await asyncio.gather(
        *(client.post("/auth/login", json=credentials) for _ in range(4))
    )

    assert [response.status_code for response in responses] == [200] * 4
    async with database.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM sessions")) == 4
