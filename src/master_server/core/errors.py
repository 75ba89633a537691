"""Domain errors and the handlers that render every error in the API's shape.

Every refusal the server gives is a `MasterServerError` carrying an HTTP status
and a stable `code`; features subclass these next to their own code::

    MasterServerError
    ├── NotAuthenticated           401
    ├── Forbidden                  403
    ├── NotFound                   404
    ├── Conflict                   409
    ├── PayloadTooLarge            413
    ├── UnsupportedMediaType       415
    └── ServiceUnavailable         503
        ├── DatabaseUnavailable    503  the database does not answer
        └── DatabaseBusy           503  a deadlock or serialisation failure

Errors that do not come from us (Starlette's 404 and 405, FastAPI's 422, a
database that is down or refuses a value, an unexpected exception) are rendered
in the same `{"error", "code"}` body.
"""

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class MasterServerError(Exception):
    status_code = 500
    code = "internal_error"
    message = "internal server error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.message
        self.extra = extra
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


class NotAuthenticated(MasterServerError):
    status_code = 401
    code = "not_authenticated"
    message = "not authenticated"


class Forbidden(MasterServerError):
    status_code = 403
    code = "forbidden"
    message = "your role does not allow this"


class NotFound(MasterServerError):
    status_code = 404
    code = "not_found"
    message = "not found"


class Conflict(MasterServerError):
    status_code = 409
    code = "conflict"
    message = "conflict"


class PayloadTooLarge(MasterServerError):
    status_code = 413
    code = "payload_too_large"
    message = "request body is too large"

    @classmethod
    def over(cls, max_bytes: int) -> "PayloadTooLarge":
        return cls(f"request body is larger than {max_bytes} bytes")


class UnsupportedMediaType(MasterServerError):
    status_code = 415
    code = "unsupported_media_type"
    message = "request body must be JSON (Content-Type: application/json)"


class ServiceUnavailable(MasterServerError):
    status_code = 503
    code = "service_unavailable"
    message = "the service is temporarily unavailable, retry later"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "the database is unavailable, retry later"


class DatabaseBusy(ServiceUnavailable):
    code = "database_busy"
    message = "the request collided with a concurrent change, retry it"


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    code: str


class ValidationIssue(BaseModel):
    field: str
    location: str
    message: str
    type: str


class ValidationErrorBody(ErrorBody):
    details: list[ValidationIssue]


# OpenAPI `responses=` for a router whose endpoints validate their input.
VALIDATION_RESPONSES: dict[int | str, Any] = {
    422: {"model": ValidationErrorBody, "description": "invalid input"}
}


def error_responses(*errors: type[MasterServerError]) -> dict[int | str, Any]:
    """OpenAPI `responses=` for the errors an endpoint can raise.

    Each status lists the `code` of every error behind it with its message,
    so a client can tell, say, a 503 to retry from the others.
    """
    responses: dict[int | str, Any] = {}
    for error in errors:
        line = f"`{error.code}`: {error.message}"
        entry = responses.setdefault(
            error.status_code, {"model": ErrorBody, "description": line}
        )
        if line not in entry["description"]:
            entry["description"] += f"; {line}"
    return responses


_STATUS_CODES = {
    400: ("bad_request", "bad request"),
    401: ("not_authenticated", "not authenticated"),
    403: ("forbidden", "forbidden"),
    404: ("not_found", "not found"),
    405: ("method_not_allowed", "method not allowed"),
    406: ("not_acceptable", "not acceptable"),
    413: ("payload_too_large", "request body is too large"),
    415: ("unsupported_media_type", "unsupported media type"),
}


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """One entry per bad field: its name, where it was, and what is wrong."""
    details = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        location = loc[0] if loc and loc[0] in _LOCATIONS else "body"
        names = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        if error.get("type") == "json_invalid":
            names = []  # the position in the text, not a field
        details.append(
            {
                "field": ".".join(names) or location,
                "location": location,
                "message": str(error.get("msg", "invalid value")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return details


_LOCATIONS = {"body", "query", "path", "header", "cookie"}


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MasterServerError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


# FastAPI's answer to a body it cannot read at all (invalid UTF-8, nesting
# deeper than the parser's recursion limit, an integer of more than 4,300
# digits, a client gone mid-body): to a client, that is malformed JSON like
# any other.
UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == UNREADABLE_BODY:
        return JSONResponse(
            {
                "error": "invalid input: body",
                "code": "validation_error",
                "details": [
                    {
                        "field": "body",
                        "location": "body",
                        "message": "the body is not JSON that can be read",
                        "type": "json_invalid",
                    }
                ],
            },
            status_code=422,
        )
    code, default_message = _STATUS_CODES.get(exc.status_code, ("http_error", "error"))
    detail = exc.detail if isinstance(exc.detail, str) else default_message
    message = detail if detail and detail[0].islower() else default_message
    return JSONResponse(
        {"error": message, "code": code},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    names = ", ".join(sorted({d["field"] for d in details})) or "request"
    return JSONResponse(
        {
            "error": f"invalid input: {names}",
            "code": "validation_error",
            "details": details,
        },
        status_code=422,
    )


# PostgreSQL SQLSTATE classes and codes, by what they mean for the caller.
_SQLSTATE_BAD_VALUE = ("22",)  # data exception: a value the column cannot hold
_SQLSTATE_RETRY = ("40001", "40P01")  # serialization failure, deadlock
_SQLSTATE_DOWN = ("08", "28", "3D", "53", "57P")  # connection, auth, resources


def _database_failure(exc: Exception) -> str | None:
    """What a database error means: "bad_value", "retry", "down" or None (a bug)."""
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return "down"
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if isinstance(exc, sa_exc.DataError) or sqlstate.startswith(_SQLSTATE_BAD_VALUE):
        return "bad_value"
    if sqlstate.startswith(_SQLSTATE_RETRY):
        return "retry"
    if exc.connection_invalidated or sqlstate.startswith(_SQLSTATE_DOWN):
        return "down"
    if isinstance(exc, sa_exc.OperationalError) and not sqlstate:
        return "down"  # SQLite: cannot open the file, database is locked...
    return None


UNSTORABLE_VALUE = "the database cannot store a value in this request"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    failure = _database_failure(exc)
    if failure is None:
        raise exc  # a bug: on to the handler of last resort, as a 500

    if failure == "bad_value":
        log.warning("http.unstorable_value", error_type=type(exc).__name__)
        issue = ValidationIssue(
            field="body",
            location="body",
            message=UNSTORABLE_VALUE,
            type="unstorable_value",
        )
        body = ValidationErrorBody(
            error=f"invalid input: {UNSTORABLE_VALUE}",
            code="validation_error",
            details=[issue],
        )
        return JSONResponse(body.model_dump(), status_code=422)

    log.error("database.unavailable", failure=failure, error_type=type(exc).__name__)
    error = DatabaseUnavailable() if failure == "down" else DatabaseBusy()
    return JSONResponse(
        error.body(), status_code=error.status_code, headers={"Retry-After": "1"}
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("http.unhandled_error", error_type=type(exc).__name__)
    return JSONResponse(
        {"error": "internal server error", "code": "internal_error"}, status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MasterServerError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.TimeoutError, _database_error)
    # asyncpg lets a refused or dropped connection through as an OSError.
    app.add_exception_handler(ConnectionError, _database_error)
    app.add_exception_handler(TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
