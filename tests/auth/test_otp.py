"""TOTP through the API: setup, verify, login with a code, and replays."""

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from master_server.core.db import Database
from master_server.models import User
from tests.auth.helpers import AppClientFactory, code_for
from tests.fixtures.app import ADMIN_PASSWORD, USER_PASSWORD, login


async def setup_otp(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/auth/otp/setup", headers=headers)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def enable_otp(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """Set up and verify TOTP; the code used at verify is spent."""
    secret = await setup_otp(client, headers)
    response = await client.post(
        "/auth/otp/verify", headers=headers, json={"code": code_for(secret)}
    )
    assert response.status_code == 200, response.text
    return secret


async def login_with(
    client: httpx.AsyncClient, otp: str | None = None
) -> httpx.Response:
    body = {"username": "alice", "password": USER_PASSWORD}
    if otp is not None:
        body["otp"] = otp
    return await client.post("/auth/login", json=body)


async def test_setup_returns_a_base32_secret_and_its_otpauth_uri(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post("/auth/otp/setup", headers=user_headers)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"secret", "otpauth_uri"}
    assert re.fullmatch(r"[A-Z2-7]{32,}", body["secret"])
    uri = urlsplit(body["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert uri.path == "/master_server:alice"
    assert parse_qs(uri.query)["secret"] == [body["secret"]]
    assert parse_qs(uri.query)["issuer"] == ["master_server"]


async def test_the_otpauth_uri_percent_encodes_the_configured_issuer(
    app_client: AppClientFactory, user: User
) -> None:
    async with app_client(otp_issuer="Acme Fleet: Prod") as http:
        headers = await login(http, "alice", USER_PASSWORD)
        response = await http.post("/auth/otp/setup", headers=headers)

    uri = response.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Acme%20Fleet%3A%20Prod:alice?")
    assert "issuer=Acme%20Fleet%3A%20Prod" in uri
    assert "+" not in uri


async def test_each_setup_gives_a_new_secret(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    first = await setup_otp(client, user_headers)
    second = await setup_otp(client, user_headers)

    assert first != second


async def test_setup_alone_does_not_enforce_otp(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await setup_otp(client, user_headers)

    me = await client.get("/auth/me", headers=user_headers)
    response = await login_with(client)

    assert me.json()["otp_enabled"] is False
    assert response.status_code == 200


async def test_verify_with_a_current_code_turns_otp_on(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)

    response = await client.post(
        "/auth/otp/verify", headers=user_headers, json={"code": code_for(secret)}
    )

    assert response.status_code == 200
    assert response.json()["otp_enabled"] is True
    assert response.json()["username"] == "alice"
    me = await client.get("/auth/me", headers=user_headers)
    assert me.json()["otp_enabled"] is True


async def test_verify_with_a_wrong_code_is_refused_and_otp_stays_off(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)
    wrong = code_for(secret, offset=5)

    response = await client.post(
        "/auth/otp/verify", headers=user_headers, json={"code": wrong}
    )

    assert response.status_code in {401, 422}
    assert set(response.json()) >= {"error", "code"}
    me = await client.get("/auth/me", headers=user_headers)
    assert me.json()["otp_enabled"] is False
    assert (await login_with(client)).status_code == 200


async def test_verify_with_a_malformed_code_is_a_422(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await setup_otp(client, user_headers)

    for body in ({}, {"code": ""}, {"code": 123456}, {"code": "1", "extra": 1}):
        response = await client.post(
            "/auth/otp/verify", headers=user_headers, json=body
        )
        assert response.status_code == 422, body


async def test_verify_before_setup_is_refused(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/auth/otp/verify", headers=user_headers, json={"code": "123456"}
    )

    assert response.status_code == 409
    assert response.json()["code"] == "otp_setup_required"


async def test_a_login_without_a_code_when_otp_is_on_says_otp_required(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await enable_otp(client, user_headers)

    response = await login_with(client)

    assert response.status_code == 401
    assert response.json()["otp_required"] is True
    assert response.json()["code"] == "otp_required"
    assert "token" not in response.json()


async def test_a_wrong_password_with_otp_on_is_just_invalid_credentials(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await enable_otp(client, user_headers)

    response = await client.post(
        "/auth/login", json={"username": "alice", "password": "wrong-password"}
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid credentials",
        "code": "invalid_credentials",
    }


async def test_a_login_with_a_current_code_succeeds(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await enable_otp(client, user_headers)

    response = await login_with(client, code_for(secret, offset=1))

    assert response.status_code == 200
    assert response.json()["user"]["otp_enabled"] is True


async def test_a_login_with_a_wrong_code_is_refused(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await enable_otp(client, user_headers)

    for code in (code_for(secret, offset=2), code_for(secret, offset=-2), "abcdef"):
        response = await login_with(client, code)
        assert response.status_code == 401, code
        assert response.json()["code"] == "invalid_otp"


async def test_codes_from_the_step_before_and_after_are_accepted(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)

    # The step before verifies, then the step after logs in: both in the window.
    verify = await client.post(
        "/auth/otp/verify",
        headers=user_headers,
        json={"code": code_for(secret, offset=-1)},
    )
    later = await login_with(client, code_for(secret, offset=1))

    assert verify.status_code == 200
    assert later.status_code == 200


async def test_codes_two_steps_away_are_refused_at_verify(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)

    for offset in (-2, 2):
        response = await client.post(
            "/auth/otp/verify",
            headers=user_headers,
            json={"code": code_for(secret, offset=offset)},
        )
        assert response.status_code == 401, offset
        assert response.json()["code"] == "invalid_otp"


async def test_the_code_used_at_verify_is_not_accepted_at_login(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)
    code = code_for(secret)
    await client.post("/auth/otp/verify", headers=user_headers, json={"code": code})

    response = await login_with(client, code)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_otp"


async def test_a_code_used_at_login_is_never_accepted_again(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await enable_otp(client, user_headers)
    code = code_for(secret, offset=1)

    first = await login_with(client, code)
    second = await login_with(client, code)

    assert first.status_code == 200
    assert second.status_code == 401
    assert second.json()["code"] == "invalid_otp"


async def test_an_older_code_is_refused_once_a_newer_one_was_used(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)
    await client.post(
        "/auth/otp/verify",
        headers=user_headers,
        json={"code": code_for(secret, offset=1)},
    )

    response = await login_with(client, code_for(secret))

    assert response.status_code == 401


async def test_two_concurrent_logins_with_one_code_let_exactly_one_in(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await enable_otp(client, user_headers)
    code = code_for(secret, offset=1)

    responses = await asyncio.gather(*(login_with(client, code) for _ in range(3)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 401, 401]


async def test_two_concurrent_verifies_with_one_code_accept_it_once(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    secret = await setup_otp(client, user_headers)
    code = code_for(secret)

    responses = await asyncio.gather(
        *(
            client.post("/auth/otp/verify", headers=user_headers, json={"code": code})
            for _ in range(2)
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] == 200
    assert statuses[1] in {401, 409, 422}


async def test_a_failed_code_at_login_opens_no_session_and_spends_nothing(
    client: httpx.AsyncClient, user_headers: dict[str, str], database: Database
) -> None:
    secret = await enable_otp(client, user_headers)
    async with database.engine.connect() as connection:
        before = await connection.scalar(select(User.otp_last_step))

    await login_with(client, code_for(secret, offset=3))

    async with database.engine.connect() as connection:
        assert await connection.scalar(select(User.otp_last_step)) == before


async def test_a_user_with_otp_on_can_move_to_a_new_secret_at_once(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    old_secret = await enable_otp(client, user_headers)
    assert (await login_with(client, code_for(old_secret, offset=1))).status_code == 200

    new_secret = await setup_otp(client, user_headers)
    # Until the new secret is verified, the old one is the one that counts.
    assert (await login_with(client)).json()["otp_required"] is True
    verify = await client.post(
        "/auth/otp/verify",
        headers=user_headers,
        json={"code": code_for(new_secret)},
    )
    login_new = await login_with(client, code_for(new_secret, offset=1))
    login_old = await login_with(client, code_for(old_secret, offset=1))

    assert verify.status_code == 200
    assert login_new.status_code == 200
    assert login_old.status_code == 401


async def test_the_secret_appears_in_no_response_but_setup(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    secret = await setup_otp(client, user_headers)
    verify = await client.post(
        "/auth/otp/verify", headers=user_headers, json={"code": code_for(secret)}
    )
    logged_in = await login_with(client, code_for(secret, offset=1))
    user_id = logged_in.json()["user"]["id"]

    responses = [
        verify,
        logged_in,
        await login_with(client),
        await client.get("/auth/me", headers=user_headers),
        await client.get("/users", headers=admin_headers),
        await client.get(f"/users/{user_id}", headers=admin_headers),
        await client.patch(
            f"/users/{user_id}", headers=admin_headers, json={"role": "user"}
        ),
    ]

    for response in responses:
        assert response.status_code < 500
        assert secret not in response.text
        assert "otp_secret" not in response.text


async def test_an_admin_can_turn_on_otp_too(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    secret = await enable_otp(client, admin_headers)

    without = await client.post(
        "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    with_code = await client.post(
        "/auth/login",
        json={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "otp": code_for(secret, offset=1),
        },
    )

    assert without.json()["otp_required"] is True
    assert with_code.status_code == 200
