"""An in-memory stand-in for the server's device endpoints, over MockTransport."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx


class FakeServer:
    """Just enough of the device API for the runner, with switches for failures.

    Set ``down`` to refuse connections, ``status_for[(method, suffix)]`` to
    answer a path ending in ``suffix`` with that status, and queue commands
    with `enqueue`.
    """

    def __init__(self) -> None:
        self.client_id = str(uuid.uuid4())
        self.token = "client-token-" + uuid.uuid4().hex
        self.down = False
        self.status_for: dict[tuple[str, str], int] = {}
        self.pending: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.refused: list[httpx.Request] = []  # the requests made while down
        # Answers 422 to an ack whose body it returns True for.
        self.refuse_ack: Callable[[dict[str, Any]], bool] = lambda body: False

    def enqueue(self, command: str, payload: Any = None) -> str:
        command_id = str(uuid.uuid4())
        self.pending.append({"id": command_id, "command": command, "payload": payload})
        return command_id

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            self.refused.append(request)
            raise httpx.ConnectError("connection refused", request=request)
        for (method, suffix), status in self.status_for.items():
            if request.method == method and request.url.path.endswith(suffix):
                return httpx.Response(
                    status, json={"error": "simulated", "code": "simulated"}
                )

        path = request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        if path == "/clients/register":
            return httpx.Response(
                201, json={"client_id": self.client_id, "token": self.token}
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return httpx.Response(
                401, json={"error": "invalid token", "code": "invalid_token"}
            )
        base = f"/clients/{self.client_id}"
        if path == f"{base}/network":
            return httpx.Response(200, json={"id": self.client_id})
        if path == f"{base}/heartbeat":
            self.heartbeats.append(body)
            return httpx.Response(
                200, json={"status": "ok", "pending_commands": len(self.pending)}
            )
        if path == f"{base}/events":
            self.events.append(body)
            return httpx.Response(201, json={"id": str(uuid.uuid4()), **body})
        if path == f"{base}/commands":
            handed_out, self.pending = self.pending, []
            return httpx.Response(200, json=handed_out)
        if path.startswith(f"{base}/commands/") and path.endswith("/ack"):
            command_id = path.split("/")[-2]
            if self.refuse_ack(body):
                return httpx.Response(422, json={"error": "too big", "code": "x"})
            previous = self.acks.get(command_id)
            if previous is not None and previous["status"] != body["status"]:
                return httpx.Response(409, json={"error": "conflict", "code": "x"})
            self.acks[command_id] = body
            return httpx.Response(200, json={"id": command_id, **body})
        return httpx.Response(404, json={"error": "not found", "code": "not_found"})

    def event_messages(self) -> list[str]:
        return [event["message"] for event in self.events]
