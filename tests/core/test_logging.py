"""The logs of a real `master-server`: one JSON object a line, and no secrets."""

import json
import re
from typing import Any

import httpx
import pytest

from master_server.auth import totp
from tests.fixtures.server import ServerProcess

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-secret-password"
USER_PASSWORD = "user-secret-password"


def read_log(server: ServerProcess) -> list[dict[str, Any]]:
    lines = server.log_path.read_text().splitlines()
    records = []
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)  # every line, uvicorn's own included
        assert isinstance(record, dict), line
        records.append(record)
    return records


def code_now(secret: str, offset: int = 0) -> str:
    return totp.code_at_step(secret, totp.time_step() + offset)


def test_a_session_of_logins_and_otp_leaves_json_logs_without_secrets(
    server: ServerProcess,
) -> None:
    server.bootstrap_admin("admin", ADMIN_PASSWORD)
    responses: list[httpx.Response] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:

        def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            response = http.request(method, path, **kwargs)
            responses.append(response)
            return response

        login = call(
            "POST",
            "/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
        )
        admin_id = login.json()["user"]["id"]
        token = login.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        call(
            "POST",
            "/users",
            headers=headers,
            json={"username": "alice", "password": USER_PASSWORD},
        )
        call(
            "POST", "/auth/login", json={"username": "admin", "password": USER_PASSWORD}
        )
        call(
            "POST",
            "/auth/login",
            json={"username": "nobody", "password": USER_PASSWORD},
        )
        secret = call("POST", "/auth/otp/setup", headers=headers).json()["secret"]
        wrong_code = code_now(secret, offset=5)
        call("POST", "/auth/otp/verify", headers=headers, json={"code": wrong_code})
        verify_code = code_now(secret)
        call("POST", "/auth/otp/verify", headers=headers, json={"code": verify_code})
        login_code = code_now(secret, offset=1)
        second = call(
            "POST",
            "/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD, "otp": login_code},
        )
        second_token = second.json()["token"]
        call("GET", "/auth/me", headers=headers)
        call("GET", "/nope")
        call("POST", "/auth/logout", headers=headers)
    server.stop()  # flush everything the process had to say

    records = read_log(server)
    text = server.log_path.read_text()

    requests = [r for r in records if r.get("event") == "http.request"]
    for record in requests:  # ours, and the fixture's wait for /healthz
        assert {"request_id", "method", "path", "status", "duration_ms"} <= set(record)
        assert isinstance(record["duration_ms"], int | float)
    by_id = {record["request_id"]: record for record in requests}
    for response in responses:
        record = by_id[response.headers["x-request-id"]]
        assert record["method"] == response.request.method
        assert record["path"] == response.request.url.path
        assert record["status"] == response.status_code
    failures = [r for r in records if r.get("event") == "user.login.failed"]
    assert [(r.get("user_id"), r.get("reason")) for r in failures] == [
        (admin_id, "wrong_password"),
        (None, "unknown_user"),
    ]
    assert all(r["request_id"] for r in failures)

    for leaked in (ADMIN_PASSWORD, USER_PASSWORD, token, second_token, secret):
        assert leaked not in text
        assert leaked[-12:] not in text
    for code in (wrong_code, verify_code, login_code):
        # A code could only coincide with digits after a decimal point
        # (timestamps, durations): a standalone run of six digits would be it.
        assert not re.search(rf"(?<![\d.]){code}(?!\d)", text), code
