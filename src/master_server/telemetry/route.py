"""The device write endpoints' route: FastAPI's contract, a handler of our own.

Heartbeats and events are nearly all of a fleet's requests. For every request
FastAPI solves the endpoint's parameters and dependencies generically, and in
bench/run that generic work cost a heartbeat more CPU than the token check,
the group commit and the database driver together (bench/RESULTS.md).

`DeviceWriteRoute` keeps the endpoint as declared, so the OpenAPI schema is
FastAPI's own, but answers requests with a handler made for the one shape
these endpoints have. Its parameters are known by name:

- `body`: the JSON body (required, or optional with a default);
- `client_id`: the path parameter;
- `token_hash`: the caller's client token, as `ClientTokenHash`;
- `request`: the request itself.

Anything else is refused when the route is created. The handler keeps
FastAPI's order: the body is read (413 over the limit) and decoded (422
`json_invalid`), then the token is checked (401), then the path parameter and
the body are validated together (one 422 listing every error, with FastAPI's
locations), then the endpoint runs and its result goes out through its
response model. tests/telemetry/test_route.py sends the same requests to
this route and to a plain FastAPI one and compares the answers. What the
handler does not do: `app.dependency_overrides`, route-level dependencies
(refused), background tasks.
"""

import inspect
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from master_server.auth.dependencies import Credentials, require_token_kind
from master_server.auth.errors import InvalidToken, WrongTokenKind
from master_server.clients.errors import ClientNotFound
from master_server.core.batching import WriteFailed, WriterOverloaded, WriterStopped
from master_server.core.errors import (
    UNREADABLE_BODY,
    VALIDATION_RESPONSES,
    NotAuthenticated,
    PayloadTooLarge,
    error_responses,
)
from master_server.core.limits import TELEMETRY_MAX_BODY_BYTES, read_body_within
from master_server.core.middleware import is_json_media_type
from master_server.core.security import TokenKind, hash_token


async def client_token_hash(credentials: Credentials) -> str:
    """The hash of the caller's client token, checked against the database later.

    The write's batch looks the hash up with the rest of the batch; here only
    its presence and kind are checked.
    """
    token = None if credentials is None else credentials.credentials
    return hash_of_client_token(token)


def hash_of_client_token(token: str | None) -> str:
    """`client_token_hash` for a bearer token already read from the request."""
    if not token:
        raise NotAuthenticated("missing bearer token")
    require_token_kind(token, {TokenKind.CLIENT}, "client token")
    return hash_token(token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer` header, read as FastAPI's
    `HTTPBearer` reads it (any case of "bearer", surrounding blanks trimmed);
    None when there is no such header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return token


ClientTokenHash = Annotated[str, Depends(client_token_hash)]

# OpenAPI `responses=` for a device write router: what any write can answer
# besides its success.
DEVICE_WRITE_RESPONSES: dict[int | str, Any] = {
    **VALIDATION_RESPONSES,
    **error_responses(
        InvalidToken,
        WrongTokenKind,
        ClientNotFound,
        PayloadTooLarge,
        WriteFailed,
        WriterOverloaded,
        WriterStopped,
    ),
}

_KNOWN_PARAMETERS = {"body", "client_id", "token_hash", "request"}


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the endpoint takes, read once from its signature."""

    body: TypeAdapter[Any]
    body_required: bool
    client_id: TypeAdapter[Any] | None
    wants_token: bool
    wants_request: bool

    @classmethod
    def of(cls, route: APIRoute) -> "_Shape":
        endpoint = route.endpoint
        name = getattr(endpoint, "__qualname__", repr(endpoint))
        parameters = inspect.signature(endpoint).parameters
        unknown = set(parameters) - _KNOWN_PARAMETERS
        if unknown or "body" not in parameters or route.dependencies:
            raise TypeError(
                f"{name}: a DeviceWriteRoute endpoint takes a `body` and only "
                f"{sorted(_KNOWN_PARAMETERS)}, with no route dependencies"
            )
        if route.response_model is None:
            raise TypeError(f"{name}: declare the response model (return type)")
        hints = get_type_hints(endpoint, include_extras=True)
        if "token_hash" in parameters and hints["token_hash"] != ClientTokenHash:
            raise TypeError(f"{name}: `token_hash` must be a ClientTokenHash")
        if "request" in parameters and hints["request"] is not Request:
            raise TypeError(f"{name}: `request` must be a Request")
        return cls(
            body=TypeAdapter(_bare(hints["body"])),
            body_required=parameters["body"].default is inspect.Parameter.empty,
            client_id=TypeAdapter(_bare(hints["client_id"]))
            if "client_id" in parameters
            else None,
            wants_token="token_hash" in parameters,
            wants_request="request" in parameters,
        )


def _bare(annotation: Any) -> Any:
    """The type inside `Annotated[...]`, without FastAPI's markers."""
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


class DeviceWriteRoute(APIRoute):
    """A route for a device's telemetry write; see the module docstring."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        shape = _Shape.of(self)
        endpoint = self.endpoint
        status_code = self.status_code or 200
        answer = TypeAdapter(self.response_model)

        async def handle(request: Request) -> Response:
            raw = await read_body_within(request, TELEMETRY_MAX_BODY_BYTES)
            received = _decode(raw, request.headers.get("content-type"))
            arguments: dict[str, Any] = {}
            if shape.wants_token:
                arguments["token_hash"] = hash_of_client_token(
                    bearer_token(request.headers.get("authorization"))
                )
            if shape.wants_request:
                arguments["request"] = request

            errors: list[Any] = []
            if shape.client_id is not None:
                arguments["client_id"] = _validate(
                    shape.client_id,
                    request.path_params["client_id"],
                    ("path", "client_id"),
                    errors,
                )
            if received is _ABSENT:
                if shape.body_required:
                    errors.append(_missing_body())
            else:
                arguments["body"] = _validate(shape.body, received, ("body",), errors)
            if errors:
                raise RequestValidationError(
                    errors, body=None if received is _ABSENT else received
                )

            result = await endpoint(**arguments)
            content = answer.dump_json(
                answer.validate_python(result, from_attributes=True), by_alias=True
            )
            return Response(
                content, status_code=status_code, media_type="application/json"
            )

        return handle


_ABSENT: Any = object()


def _decode(raw: bytes, content_type: str | None) -> Any:
    """The body as FastAPI reads it: JSON when declared so, else the bytes."""
    if not raw:
        return _ABSENT
    if not is_json_media_type(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from exc
    except Exception as exc:
        # Invalid UTF-8, nesting past the parser, a 5,000-digit number: the
        # error FastAPI raises, which the app's handler answers as a 422
        # `json_invalid` like any other malformed JSON.
        raise HTTPException(400, UNREADABLE_BODY) from exc


def _validate(
    adapter: TypeAdapter[Any], value: Any, loc: tuple[str, ...], errors: list[Any]
) -> Any:
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        errors.extend(
            {**error, "loc": (*loc, *error["loc"])}
            for error in exc.errors(include_url=False)
        )
        return None


def _missing_body() -> dict[str, Any]:
    return {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
