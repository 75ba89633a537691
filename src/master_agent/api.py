"""The server's device endpoints, over httpx.

Errors raised by `ServerApi`::

    ApiError
    ├── ServerUnavailable    no answer, timeout, 5xx, 408 or 429: retry later
    ├── Unauthorized         401: provision key or client token refused
    ├── RequestRejected      any other 4xx: retrying the same request will not help
    │   └── Conflict         409
    └── UnexpectedResponse   a 2xx whose body is not what API.md promises
"""

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from master_agent import __version__
from master_agent.netinfo import NetworkInfo

EventLevel = Literal["info", "warn", "error"]
AckStatus = Literal["acked", "failed"]

# Ids end up in URLs and in outbox file names, so anything else is refused.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ApiError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class ServerUnavailable(ApiError):
    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_seconds = retry_after_seconds


class Unauthorized(ApiError):
    pass


class RequestRejected(ApiError):
    def __init__(
        self, message: str, *, status_code: int, code: str | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.code = code


class Conflict(RequestRejected):
    pass


class UnexpectedResponse(ApiError):
    pass


@dataclass(frozen=True)
class Credentials:
    client_id: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class HeartbeatReply:
    pending_commands: int


@dataclass(frozen=True)
class PolledCommand:
    id: str
    command: str
    payload: Any


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


class ServerApi:
    """One connection pool to the server; call `authenticate` after registering."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_seconds,
            transport=transport,
            headers={"User-Agent": f"master-agent/{__version__}"},
        )
        self._credentials: Credentials | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    def authenticate(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def register(self, provision_key: str, network: NetworkInfo) -> Credentials:
        body: dict[str, Any] = {"provision_key": provision_key}
        body.update(
            (name, value)
            for name, value in _network_body(network).items()
            if value is not None
        )

        response = await self._send("POST", "/clients/register", body, auth=False)

        data = _json_object(response)
        client_id, token = data.get("client_id"), data.get("token")
        if not is_valid_id(client_id) or not isinstance(token, str) or not token:
            raise UnexpectedResponse("registration answer lacks client_id or token")
        assert isinstance(client_id, str)
        return Credentials(client_id=client_id, token=token)

    async def report_network(self, network: NetworkInfo) -> None:
        body = _network_body(network)
        # An address that went away must be cleared, but a port the agent was
        # not told about is left as an admin may have set it.
        if body["service_port"] is None:
            del body["service_port"]
        await self._send("PATCH", self._client_path("network"), body)

    async def send_heartbeat(
        self, uptime_seconds: float, metrics: dict[str, float | int]
    ) -> HeartbeatReply:
        body = {"uptime_s": uptime_seconds, "metrics": metrics}

        response = await self._send("POST", self._client_path("heartbeat"), body)

        pending = _json_object(response).get("pending_commands", 0)
        if not isinstance(pending, int) or isinstance(pending, bool):
            pending = 0
        return HeartbeatReply(pending_commands=pending)

    async def record_event(
        self, level: EventLevel, message: str, data: dict[str, Any] | None = None
    ) -> None:
        body: dict[str, Any] = {"level": level, "message": message}
        if data is not None:
            body["data"] = data
        await self._send("POST", self._client_path("events"), body)

    async def poll_commands(self) -> list[PolledCommand]:
        """Fetch the pending commands; the server marks each one `sent`.

        Items that carry no usable id are dropped, since they cannot be acked.
        """
        response = await self._send("GET", self._client_path("commands"))

        items = _json(response)
        if not isinstance(items, list):
            raise UnexpectedResponse("command poll did not answer with a list")
        commands = []
        for item in items:
            if not isinstance(item, dict) or not is_valid_id(item.get("id")):
                continue
            commands.append(
                PolledCommand(
                    id=item["id"],
                    command=str(item.get("command", "")),
                    payload=item.get("payload"),
                )
            )
        return commands

    async def acknowledge(
        self, command_id: str, status: AckStatus, result: Any
    ) -> None:
        path = self._client_path("commands", command_id, "ack")
        await self._send("POST", path, {"status": status, "result": result})

    def _client_path(self, *parts: str) -> str:
        if self._credentials is None:
            raise RuntimeError("authenticate() must be called before this request")
        segments = [self._credentials.client_id, *parts]
        return "/clients/" + "/".join(quote(segment, safe="") for segment in segments)

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        auth: bool = True,
    ) -> httpx.Response:
        headers = {}
        if auth:
            if self._credentials is None:
                raise RuntimeError("authenticate() must be called before this request")
            headers["Authorization"] = f"Bearer {self._credentials.token}"

        try:
            response = await self._http.request(
                method, path, json=body, headers=headers
            )
        except httpx.TransportError as exc:
            # Covers refused connections, DNS failures and every timeout.
            raise ServerUnavailable(f"{type(exc).__name__}: {exc}") from exc

        _raise_for_status(response)
        return response


def _network_body(network: NetworkInfo) -> dict[str, Any]:
    return {
        "eth0": network.eth0,
        "wlan0": network.wlan0,
        "service_port": network.service_port,
    }


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return

    message, code = _error_of(response)
    if status >= 500 or status in (408, 429):
        raise ServerUnavailable(
            message,
            status_code=status,
            retry_after_seconds=_retry_after(response),
        )
    if status == 401:
        raise Unauthorized(message, status_code=status)
    if status == 409:
        raise Conflict(message, status_code=status, code=code)
    raise RequestRejected(message, status_code=status, code=code)


def _error_of(response: httpx.Response) -> tuple[str, str | None]:
    fallback = f"HTTP {response.status_code}"
    try:
        data = response.json()
    except ValueError:
        return fallback, None
    if not isinstance(data, dict):
        return fallback, None
    message = data.get("error")
    code = data.get("code")
    return (
        f"{fallback}: {message}" if isinstance(message, str) else fallback,
        code if isinstance(code, str) else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare enough to treat as absent
    return seconds if seconds >= 0 else None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(
            f"HTTP {response.status_code} answer is not JSON"
        ) from None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    data = _json(response)
    if not isinstance(data, dict):
        raise UnexpectedResponse(f"HTTP {response.status_code} answer is not an object")
    return data
