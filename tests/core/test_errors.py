"""Every error is JSON {"error", "code"}, whatever produced it, and never a 500."""

from collections.abc import AsyncIterator

import httpx
import pytest

from master_server.models import User
from tests.fixtures.app import USER_PASSWORD

MAX_BODY_BYTES = 1_048_576  # the default MASTER_MAX_BODY_BYTES


def assert_error_shape(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["code"] == code
    if status == 422:
        assert set(body) == {"error", "code", "details"}
        assert body["details"]
    else:
        assert set(body) <= {"error", "code", "otp_required"}


@pytest.mark.parametrize("path", ["/nope", "/users/x/y", "/auth", "/healthz/extra"])
async def test_an_unknown_path_is_a_json_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert_error_shape(response, 404, "not_found")
    assert response.json()["error"] == "not found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/healthz"),
        ("GET", "/auth/login"),
        ("PUT", "/auth/login"),
        ("PUT", "/users"),
        ("OPTIONS", "/users"),
    ],
)
async def test_a_method_a_path_does_not_take_is_a_json_405(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_error_shape(response, 405, "method_not_allowed")
    assert response.headers["allow"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"username": ',
        b"{'username': 'alice'}",
        b"not json",
        b"\xff\xfe",
        b"[",
        b"{}}",
    ],
)
async def test_malformed_json_is_a_422(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post(
        "/auth/login", content=content, headers={"content-type": "application/json"}
    )

    assert_error_shape(response, 422, "validation_error")
    assert response.json()["details"][0]["location"] == "body"


@pytest.mark.parametrize("content", [b"null", b"[]", b'"alice"', b"42", b""])
async def test_a_body_that_is_not_an_object_is_a_422(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post(
        "/auth/login", content=content, headers={"content-type": "application/json"}
    )

    assert_error_shape(response, 422, "validation_error")


async def test_a_validation_error_names_every_bad_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/auth/login", json={"username": 5, "otp": "1" * 65, "extra": True}
    )

    assert_error_shape(response, 422, "validation_error")
    fields = {detail["field"] for detail in response.json()["details"]}
    assert fields == {"username", "password", "otp", "extra"}
    for detail in response.json()["details"]:
        assert set(detail) == {"field", "location", "message", "type"}
        assert detail["location"] == "body"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        None,
    ],
)
async def test_a_body_that_is_not_json_is_a_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await client.post(
        "/auth/login",
        content=b'{"username": "alice", "password": "user-password-1"}',
        headers=headers,
    )

    assert_error_shape(response, 415, "unsupported_media_type")


async def test_a_chunked_body_that_is_not_json_is_a_415(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "alice", '
        yield b'"password": "user-password-1"}'

    response = await client.post(
        "/auth/login", content=chunks(), headers={"content-type": "text/plain"}
    )

    assert_error_shape(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON"],
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, user: User, content_type: str
) -> None:
    response = await client.post(
        "/auth/login",
        content=b'{"username": "alice", "password": "user-password-1"}',
        headers={"content-type": content_type},
    )

    assert response.status_code == 200


async def test_a_body_over_the_limit_with_a_content_length_is_a_413(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"username": "' + b"a" * MAX_BODY_BYTES + b'", "password": "x"}'

    response = await client.post(
        "/auth/login", content=body, headers={"content-type": "application/json"}
    )

    assert_error_shape(response, 413, "payload_too_large")


async def test_a_chunked_body_over_the_limit_is_a_413(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "'
        for _ in range(20):
            yield b"a" * 65_536
        yield b'", "password": "x"}'

    response = await client.post(
        "/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )

    assert_error_shape(response, 413, "payload_too_large")


async def test_a_body_just_under_the_limit_is_read(
    client: httpx.AsyncClient,
) -> None:
    padding = MAX_BODY_BYTES - 100
    body = b'{"username": "' + b"a" * padding + b'", "password": "x"}'

    response = await client.post(
        "/auth/login", content=body, headers={"content-type": "application/json"}
    )

    # Read and validated: the username is over its own limit.
    assert_error_shape(response, 422, "validation_error")


async def test_a_non_uuid_id_is_a_422_naming_the_path_parameter(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.delete("/users/not-a-uuid", headers=admin_headers)

    assert_error_shape(response, 422, "validation_error")
    assert response.json()["details"][0]["location"] == "path"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/auth/login", {"username": "a" * 2000, "password": "x"}),
        ("POST", "/auth/login", {"username": "alice", "password": "\u0000" * 8}),
        ("POST", "/auth/login", {"username": "\u0000", "password": "x" * 8}),
        ("POST", "/auth/login", {"username": "ä", "password": "ü" * 8, "otp": "①"}),
        ("POST", "/auth/login", {"username": ["alice"], "password": {"a": 1}}),
        ("POST", "/auth/login", b'{"username": "alice", "password": 1e999}'),
        ("POST", "/auth/login", b'{"username": "alice", "password": NaN}'),
        ("POST", "/auth/login", b'{"username": "alice", "password": "\\ud800x"}'),
        ("POST", "/auth/otp/verify", {"code": "\u0000\u0000\u0000\u0000\u0000\u0000"}),
        ("POST", "/auth/otp/verify", {"code": "12345\u0000"}),
        ("POST", "/users", {"username": "\u0000", "password": "x" * 8}),
        ("POST", "/users", {"username": "b", "password": "\u0000" * 8}),
        ("POST", "/users", {"username": "b", "password": "x" * 8, "role": None}),
        ("PATCH", "/users/00000000-0000-0000-0000-000000000000", {"role": []}),
        ("GET", "/users?limit=%00", None),
        ("GET", "/users?offset=1e3", None),
        ("GET", "/users/%00", None),
        ("GET", "/users/" + "f" * 5000, None),
    ],
)
async def test_strange_input_never_produces_a_500(
    client: httpx.AsyncClient,
    user: User,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: object,
) -> None:
    if isinstance(body, bytes):
        content, body = body, None
        headers = {**admin_headers, "content-type": "application/json"}
    else:
        content, headers = None, admin_headers

    # The ASGI transport re-raises anything unhandled, so a bug fails here.
    response = await client.request(
        method, path, content=content, json=body, headers=headers
    )

    assert response.status_code < 500
    if response.status_code >= 400:
        assert {"error", "code"} <= set(response.json())


async def test_every_response_carries_a_request_id(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/healthz")
    second = await client.get("/nope")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("abc-123.X_y", True), ("has spaces", False), ("x" * 65, False), ("", False)],
)
async def test_a_sane_incoming_request_id_is_echoed(
    client: httpx.AsyncClient, sent: str, echoed: bool
) -> None:
    response = await client.get("/healthz", headers={"x-request-id": sent})

    assert (response.headers["x-request-id"] == sent) is echoed
    assert response.headers["x-request-id"]


async def test_a_wrong_password_error_matches_the_documented_401(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.post(
        "/auth/login", json={"username": "alice", "password": USER_PASSWORD + "x"}
    )

    assert_error_shape(response, 401, "invalid_credentials")


async def test_the_openapi_schema_documents_the_errors_of_auth_and_users(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"401", "422", "503"} <= set(paths["/auth/login"]["post"]["responses"])
    assert {"401", "403", "409", "503"} <= set(paths["/users"]["post"]["responses"])
    assert {"404", "409"} <= set(paths["/users/{user_id}"]["delete"]["responses"])


async def test_every_operation_documents_the_error_shapes_it_can_answer(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]

    # FastAPI's own {"detail": [...]} 422 is never what the server answers.
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for name, operation in operations:
        responses = operation["responses"]
        if "422" in responses:
            assert "ValidationErrorBody" in str(responses["422"]), name
        # The body middleware's refusals, wherever a body is taken.
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), name
            assert "ErrorBody" in str(responses["415"]), name


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "\xff"}',
        b"[" * 100_000,
        b'{"n": ' + b"1" * 5000 + b"}",
    ],
    ids=["invalid-utf8", "deep-nesting", "huge-integer"],
)
async def test_a_body_json_cannot_read_is_a_422_like_other_malformed_json(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: bytes
) -> None:
    response = await client.post(
        "/users",
        content=body,
        headers={**admin_headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["details"][0]["type"] == "json_invalid"


async def test_a_trailing_slash_is_a_json_404_not_a_redirect(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/clients/", headers=admin_headers)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
