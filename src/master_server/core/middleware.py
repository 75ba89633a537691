"""ASGI middleware: request ids and access logs, and request body checks.

Both are plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a
task and a memory stream per request on the hottest paths.
"""

import re
import time
import uuid

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from master_server.core.errors import (
    MasterServerError,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = structlog.get_logger("master_server.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLogMiddleware:
    """Binds a request id for the request's logs and logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


class RequestBodyMiddleware:
    """Refuses a body that is not JSON (415) or over `max_bytes` (413).

    The size is checked against Content-Length first and then counted as the
    body streams in, so a chunked upload cannot slip past it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, PayloadTooLarge.over(self.max_bytes))
            return
        if (declared or _is_chunked(scope)) and not _is_json(scope):
            await _refuse(send, UnsupportedMediaType())
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing
                    # untouched and reaches the JSON error handler as a 413.
                    too_large = PayloadTooLarge.over(self.max_bytes)
                    raise HTTPException(too_large.status_code, too_large.message)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_chunked(scope: Scope) -> bool:
    """A body sent without a Content-Length (Transfer-Encoding: chunked)."""
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return is_json_media_type(value.decode("latin-1"))
    return False


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type is JSON: `application/json` or `application/*+json`."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _refuse(send: Send, error: MasterServerError) -> None:
    status = error.status_code
    payload = orjson.dumps(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
