"""DeviceWriteRoute answers exactly as FastAPI's own handling would.

The same endpoints are mounted twice in one app, once on DeviceWriteRoute and
once on a plain FastAPI route, and every request below goes to both: status,
JSON body and the headers a client reads must be the same. No database: the
endpoints echo what they were given.
"""

import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from master_server.core.errors import install_error_handlers
from master_server.core.limits import TELEMETRY_MAX_BODY_BYTES, read_body_within
from master_server.core.middleware import RequestBodyMiddleware, RequestLogMiddleware
from master_server.core.security import TokenKind, hash_token, new_token
from master_server.events.schemas import EventCreate
from master_server.heartbeats.schemas import HeartbeatCreate
from master_server.telemetry.route import ClientTokenHash, DeviceWriteRoute

CLIENT_ID = "3f2b8c1e-0d4a-4e8e-9a51-6c1f0b2d7e90"
TOKEN = new_token(TokenKind.CLIENT)


class HeartbeatEcho(BaseModel):
    client_id: uuid.UUID
    token_hash: str
    body: HeartbeatCreate | None
    saw_request: bool


class EventEcho(BaseModel):
    client_id: uuid.UUID
    token_hash: str
    body: EventCreate


async def heartbeat_like(
    client_id: uuid.UUID,
    token_hash: ClientTokenHash,
    request: Request,
    body: Annotated[HeartbeatCreate | None, Body()] = None,
) -> HeartbeatEcho:
    """An optional body, as a heartbeat has."""
    return HeartbeatEcho(
        client_id=client_id,
        token_hash=token_hash,
        body=body,
        saw_request=isinstance(request, Request),
    )


async def event_like(
    client_id: uuid.UUID, body: EventCreate, token_hash: ClientTokenHash
) -> EventEcho:
    """A required body and a 201, as an event has."""
    return EventEcho(client_id=client_id, token_hash=token_hash, body=body)


class PlainRoute(APIRoute):
    """FastAPI's own handling, behind the same 64 KiB limit."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            await read_body_within(request, TELEMETRY_MAX_BODY_BYTES)
            return await handler(request)

        return bounded


def mount(app: FastAPI, prefix: str, route_class: type[Any]) -> None:
    router = APIRouter(
        prefix=f"{prefix}/clients/{{client_id}}", route_class=route_class
    )
    router.post("/heartbeat")(heartbeat_like)
    router.post("/events", status_code=201)(event_like)
    app.include_router(router)


@pytest.fixture(scope="module")
def twin_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    mount(app, "/lean", DeviceWriteRoute)
    mount(app, "/plain", PlainRoute)
    app.add_middleware(RequestBodyMiddleware, max_bytes=1_048_576)
    app.add_middleware(RequestLogMiddleware)
    return app


@pytest.fixture
async def http(twin_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=twin_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def headers(
    authorization: str | None = f"Bearer {TOKEN}",
    content_type: str = "application/json",
) -> dict[str, str]:
    sent = {"content-type": content_type}
    if authorization is not None:
        sent["authorization"] = authorization
    return sent


AUTH = headers()
NO_TOKEN = headers(None)
HEARTBEAT = b'{"uptime_s": 12.5, "metrics": {"load1": 0.1}}'
EVENT = b'{"level": "warn", "message": "disk", "data": {"pct": 93}}'
HB = "heartbeat"
EV = "events"
ID = CLIENT_ID


def nested(depth: int) -> bytes:
    return b'{"metrics": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


# (name, endpoint, client id in the path, headers, body)
CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("valid", HB, ID, AUTH, HEARTBEAT),
    ("no body", HB, ID, AUTH, b""),
    ("json null", HB, ID, AUTH, b"null"),
    ("empty object", HB, ID, AUTH, b"{}"),
    ("upper-case id", HB, ID.upper(), AUTH, HEARTBEAT),
    ("+json type", HB, ID, headers(content_type="application/x+json"), b"{}"),
    ("no token", HB, ID, NO_TOKEN, HEARTBEAT),
    ("session token", HB, ID, headers("Bearer mss_x"), b"{}"),
    ("provision key", HB, ID, headers("Bearer msp_x"), b"{}"),
    ("empty bearer", HB, ID, headers("Bearer "), b"{}"),
    ("basic auth", HB, ID, headers("Basic dTpw"), b"{}"),
    ("lower-case scheme", HB, ID, headers(f"bearer {TOKEN}"), b"{}"),
    ("upper-case scheme", HB, ID, headers(f"BEARER {TOKEN}"), b"{}"),
    ("scheme alone", HB, ID, headers("Bearer"), b"{}"),
    ("token padded with blanks", HB, ID, headers(f"Bearer   {TOKEN}  "), b"{}"),
    ("tab after the scheme", HB, ID, headers(f"Bearer\t{TOKEN}"), b"{}"),
    ("token of three letters", HB, ID, headers("Bearer msc"), b"{}"),
    ("bad id", HB, "not-a-uuid", AUTH, HEARTBEAT),
    ("bad id and body", HB, "123", AUTH, b'{"uptime_s": "5", "x": 1}'),
    ("bad id, body, no token", HB, "123", NO_TOKEN, b'{"uptime_s": -1}'),
    ("malformed json", HB, ID, AUTH, b'{"uptime_s": 1,'),
    ("malformed json, no token", HB, ID, NO_TOKEN, b"{nope"),
    ("invalid utf-8", HB, ID, AUTH, b'{"metrics": {"a": "\xff"}}'),
    ("nested past the parser", HB, ID, AUTH, b"[" * 100_000 + b"]" * 100_000),
    ("a 5000-digit number", HB, ID, AUTH, b'{"uptime_s": ' + b"9" * 5000 + b"}"),
    ("an array", HB, ID, AUTH, b"[1, 2]"),
    ("a string", HB, ID, AUTH, b'"hello"'),
    ("extra field", HB, ID, AUTH, b'{"uptime": 1}'),
    ("uptime as a string", HB, ID, AUTH, b'{"uptime_s": "5"}'),
    ("uptime as a bool", HB, ID, AUTH, b'{"uptime_s": true}'),
    ("NaN", HB, ID, AUTH, b'{"metrics": {"x": NaN}}'),
    ("NUL in a key", HB, ID, AUTH, b'{"metrics": {"a\\u0000": 1}}'),
    ("lone surrogate", HB, ID, AUTH, b'{"metrics": {"a": "\\ud800"}}'),
    ("too deep", HB, ID, AUTH, nested(20)),
    ("too large", HB, ID, AUTH, b'{"metrics": {"a": "' + b"x" * 70_000 + b'"}}'),
    ("not json", HB, ID, headers(content_type="text/plain"), b"{}"),
    ("event", EV, ID, AUTH, EVENT),
    ("event without body", EV, ID, AUTH, b""),
    ("event null", EV, ID, AUTH, b"null"),
    ("event missing fields", EV, ID, AUTH, b"{}"),
    ("event bad level", EV, ID, AUTH, b'{"level": "fatal", "message": "x"}'),
    ("event, no token, bad body", EV, ID, NO_TOKEN, b'{"level": 1}'),
    ("event bad id", EV, "x", AUTH, EVENT),
    ("event malformed", EV, ID, AUTH, b'{"level": "info", "message": }'),
]


def comparable(response: httpx.Response) -> dict[str, Any]:
    return {
        "status": response.status_code,
        "body": response.json(),
        "content-type": response.headers.get("content-type"),
        "www-authenticate": response.headers.get("www-authenticate"),
    }


@pytest.mark.parametrize(
    ("endpoint", "client_id", "headers", "body"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_the_lean_route_answers_like_fastapi(
    http: httpx.AsyncClient,
    endpoint: str,
    client_id: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    answers = [
        await http.post(
            f"/{prefix}/clients/{client_id}/{endpoint}", headers=headers, content=body
        )
        for prefix in ("lean", "plain")
    ]

    lean, plain = (comparable(answer) for answer in answers)
    assert lean == plain
    assert lean["status"] != 500


async def test_a_valid_write_reaches_the_endpoint_with_every_argument(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        f"/lean/clients/{CLIENT_ID}/heartbeat", headers=AUTH, content=HEARTBEAT
    )

    assert response.status_code == 200
    assert response.json() == {
        "client_id": CLIENT_ID,
        "token_hash": hash_token(TOKEN),
        "body": {"uptime_s": 12.5, "metrics": {"load1": 0.1}},
        "saw_request": True,
    }
    event = await http.post(
        f"/lean/clients/{CLIENT_ID}/events", headers=AUTH, content=EVENT
    )
    assert event.status_code == 201
    assert event.json()["body"] == json.loads(EVENT)


async def test_a_chunked_body_over_the_limit_is_a_413(
    http: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"metrics": {"a": "'
        for _ in range(10):
            yield b"x" * 8192
        yield b'"}}'

    response = await http.post(
        f"/lean/clients/{CLIENT_ID}/heartbeat", headers=AUTH, content=chunks()
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_the_openapi_operations_are_the_same(twin_app: FastAPI) -> None:
    paths = twin_app.openapi()["paths"]
    for endpoint in ("heartbeat", "events"):
        lean = paths[f"/lean/clients/{{client_id}}/{endpoint}"]["post"]
        plain = paths[f"/plain/clients/{{client_id}}/{endpoint}"]["post"]
        lean.pop("operationId")
        plain.pop("operationId")
        assert lean == plain
        assert lean["security"] == [{"HTTPBearer": []}]
        assert [p["name"] for p in lean["parameters"]] == ["client_id"]


async def takes_a_query(body: HeartbeatCreate, limit: int) -> HeartbeatEcho:
    raise AssertionError("never called")


async def token_as_str(body: HeartbeatCreate, token_hash: str) -> HeartbeatEcho:
    raise AssertionError("never called")


async def no_body(client_id: uuid.UUID) -> HeartbeatEcho:
    raise AssertionError("never called")


async def no_response_model(body: HeartbeatCreate):  # type: ignore[no-untyped-def]
    raise AssertionError("never called")


@pytest.mark.parametrize(
    "endpoint", [takes_a_query, token_as_str, no_body, no_response_model]
)
def test_an_endpoint_the_route_cannot_serve_is_refused_at_start_up(
    endpoint: Any,
) -> None:
    router = APIRouter(route_class=DeviceWriteRoute)

    with pytest.raises(TypeError, match=endpoint.__name__):
        router.post("/x")(endpoint)


@pytest.mark.parametrize("prefix", ["lean", "plain"])
async def test_a_client_gone_before_its_body_is_whole_is_not_a_server_error(
    twin_app: FastAPI, prefix: str
) -> None:
    """The device hung up mid-body: logged as its fault, like FastAPI does."""
    path = f"/{prefix}/clients/{CLIENT_ID}/heartbeat"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    messages = iter(
        [
            {"type": "http.request", "body": b'{"uptime_s":', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[Any] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    await twin_app(scope, receive, send)

    assert sent[0]["status"] == 422
