import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from master_agent.api import (
    Conflict,
    Credentials,
    RequestRejected,
    ServerApi,
    ServerUnavailable,
    Unauthorized,
    UnexpectedResponse,
)
from master_agent.netinfo import NetworkInfo

CLIENT_ID = "0b6c6f0e-1f7e-4a53-9d43-3f1b0d5e8f11"
CREDENTIALS = Credentials(client_id=CLIENT_ID, token="tok-123")
NETWORK = NetworkInfo(eth0="192.0.2.10", wlan0=None, service_port=None)

Handler = Callable[[httpx.Request], httpx.Response]
MakeApi = Callable[[Handler], ServerApi]


@pytest.fixture
async def make_api() -> AsyncIterator[MakeApi]:
    apis: list[ServerApi] = []

    def make(handler: Handler) -> ServerApi:
        api = ServerApi(
            "http://master.test/base", transport=httpx.MockTransport(handler)
        )
        api.authenticate(CREDENTIALS)
        apis.append(api)
        return api

    yield make
    for api in apis:
        await api.aclose()


def answer(status: int, body: object = None, **headers: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


async def test_a_5xx_answer_means_the_server_is_unavailable(make_api: MakeApi) -> None:
    api = make_api(answer(500, {"error": "boom", "code": "internal"}))

    with pytest.raises(ServerUnavailable) as caught:
        await api.send_heartbeat(1.0, {})

    assert caught.value.status_code == 500
    assert "boom" in caught.value.message


async def test_a_refused_connection_means_the_server_is_unavailable(
    make_api: MakeApi,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = make_api(refuse)

    with pytest.raises(ServerUnavailable, match="ConnectError"):
        await api.poll_commands()


async def test_a_timeout_means_the_server_is_unavailable(make_api: MakeApi) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    api = make_api(hang)

    with pytest.raises(ServerUnavailable):
        await api.record_event("info", "hello")


async def test_a_429_is_retryable_and_carries_its_retry_after(
    make_api: MakeApi,
) -> None:
    api = make_api(answer(429, {"error": "slow down"}, **{"Retry-After": "7"}))

    with pytest.raises(ServerUnavailable) as caught:
        await api.poll_commands()

    assert caught.value.retry_after_seconds == 7.0


async def test_a_401_raises_unauthorized(make_api: MakeApi) -> None:
    api = make_api(answer(401, {"error": "invalid token", "code": "invalid_token"}))

    with pytest.raises(Unauthorized):
        await api.send_heartbeat(1.0, {})


async def test_a_409_on_ack_raises_conflict(make_api: MakeApi) -> None:
    api = make_api(answer(409, {"error": "already failed", "code": "conflict"}))

    with pytest.raises(Conflict) as caught:
        await api.acknowledge("cmd-1", "acked", None)

    assert caught.value.code == "conflict"


async def test_other_4xx_answers_are_rejections_not_outages(make_api: MakeApi) -> None:
    api = make_api(answer(422, {"error": "bad", "code": "validation_error"}))

    with pytest.raises(RequestRejected) as caught:
        await api.record_event("info", "hello")

    assert not isinstance(caught.value, ServerUnavailable)
    assert caught.value.status_code == 422


async def test_an_error_answer_that_is_not_json_still_raises(make_api: MakeApi) -> None:
    api = make_api(lambda request: httpx.Response(502, text="<html>bad gateway"))

    with pytest.raises(ServerUnavailable, match="HTTP 502"):
        await api.poll_commands()


async def test_requests_carry_the_client_token_under_the_base_path(
    make_api: MakeApi,
) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok", "pending_commands": 2})

    api = make_api(record)

    reply = await api.send_heartbeat(12.5, {"load1": 0.5})

    assert reply.pending_commands == 2
    assert seen[0].url.path == f"/base/clients/{CLIENT_ID}/heartbeat"
    assert seen[0].headers["Authorization"] == "Bearer tok-123"
    assert json.loads(seen[0].content) == {
        "uptime_s": 12.5,
        "metrics": {"load1": 0.5},
    }


async def test_registration_sends_no_token_and_leaves_out_unknown_fields(
    make_api: MakeApi,
) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"client_id": CLIENT_ID, "token": "new"})

    api = make_api(record)

    credentials = await api.register("pk-1", NETWORK)

    assert credentials == Credentials(client_id=CLIENT_ID, token="new")
    assert "Authorization" not in seen[0].headers
    assert json.loads(seen[0].content) == {
        "provision_key": "pk-1",
        "eth0": "192.0.2.10",
    }


async def test_registration_without_a_token_in_the_answer_is_unexpected(
    make_api: MakeApi,
) -> None:
    api = make_api(answer(201, {"client_id": CLIENT_ID}))

    with pytest.raises(UnexpectedResponse):
        await api.register("pk-1", NETWORK)


async def test_network_report_clears_lost_addresses_but_keeps_an_unset_port(
    make_api: MakeApi,
) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    api = make_api(record)

    await api.report_network(NETWORK)

    assert seen[0].method == "PATCH"
    assert json.loads(seen[0].content) == {"eth0": "192.0.2.10", "wlan0": None}


async def test_poll_drops_items_without_a_usable_id(make_api: MakeApi) -> None:
    api = make_api(
        answer(
            200,
            [
                {"id": "c-1", "command": "echo", "payload": {"a": 1}},
                {"id": "../etc", "command": "echo"},
                {"command": "echo"},
                "junk",
            ],
        )
    )

    commands = await api.poll_commands()

    assert [(c.id, c.command, c.payload) for c in commands] == [
        ("c-1", "echo", {"a": 1})
    ]


async def test_a_poll_answer_that_is_not_a_list_is_unexpected(
    make_api: MakeApi,
) -> None:
    api = make_api(answer(200, {"commands": []}))

    with pytest.raises(UnexpectedResponse):
        await api.poll_commands()


def test_credentials_do_not_show_the_token_in_their_repr() -> None:
    assert "tok-123" not in repr(CREDENTIALS)
