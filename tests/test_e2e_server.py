"""The real `master-server` over real HTTP: the first minutes of a new install."""

from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.server import ServerProcess

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "correct-horse-battery")


def log_in(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post(
        "/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_an_operator_bootstraps_an_admin_who_creates_a_user_over_http(
    server: ServerProcess,
) -> None:
    server.bootstrap_admin(*ADMIN)

    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        admin_headers = log_in(http, *ADMIN)
        created = http.post(
            "/users",
            headers=admin_headers,
            json={"username": "alice", "password": "alice-password"},
        )
        alice_headers = log_in(http, "ALICE", "alice-password")
        me = http.get("/auth/me", headers=alice_headers)
        forbidden = http.get("/users", headers=alice_headers)
        listed = http.get("/users", headers=admin_headers)
        logged_out = http.post("/auth/logout", headers=alice_headers)
        after_logout = http.get("/auth/me", headers=alice_headers)

    assert created.status_code == 201
    assert me.json()["username"] == "alice"
    assert me.json()["role"] == "user"
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    assert [user["username"] for user in listed.json()] == ["admin", "alice"]
    assert logged_out.status_code == 204
    assert after_logout.status_code == 401


def test_the_real_server_refuses_oversized_and_non_json_bodies(
    server: ServerProcess,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"username": "'
        for _ in range(40):
            yield b"a" * 32_768
        yield b'", "password": "x"}'

    with httpx.Client(base_url=server.url, timeout=30) as http:
        declared = http.post(
            "/auth/login",
            content=b"{" + b" " * 1_100_000 + b"}",
            headers={"content-type": "application/json"},
        )
        chunked = http.post(
            "/auth/login",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        plain = http.post(
            "/auth/login", content=b"username=a", headers={"content-type": "text/plain"}
        )
        after = http.get("/healthz")

    assert (declared.status_code, declared.json()["code"]) == (413, "payload_too_large")
    assert (chunked.status_code, chunked.json()["code"]) == (413, "payload_too_large")
    assert (plain.status_code, plain.json()["code"]) == (415, "unsupported_media_type")
    assert after.status_code == 200
