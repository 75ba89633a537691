"""An admin driving a real `master-server` over HTTP, as an operator would."""

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from tests.fixtures.server import ServerProcess

ADMIN = ("admin", "correct-horse-battery")
FINAL_STATUSES = {"acked", "failed"}


@dataclass(frozen=True)
class NewClient:
    id: str
    provision_key: str


@dataclass
class Operator:
    """An admin logged in to the server; every call checks its status code."""

    http: httpx.Client
    headers: dict[str, str]

    def create_client(self, name: str) -> NewClient:
        response = self.http.post("/clients", json={"name": name}, headers=self.headers)
        assert response.status_code == 201, response.text
        body = response.json()
        return NewClient(id=body["id"], provision_key=body["provision_key"])

    def client(self, client_id: str) -> dict[str, Any]:
        response = self.http.get(f"/clients/{client_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_status(
        self, client_id: str, status: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The client once it shows `status`; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.client(client_id)
            if shown["status"] == status:
                return shown
            assert time.monotonic() < deadline, f"still {shown['status']}: {shown}"
            time.sleep(0.1)

    def new_provision_key(self, client_id: str) -> str:
        response = self.http.post(
            f"/clients/{client_id}/provision-key", headers=self.headers
        )
        assert response.status_code == 200, response.text
        key: str = response.json()["provision_key"]
        return key

    def send(self, client_id: str, command: str, payload: Any = None) -> str:
        body: dict[str, Any] = {"command": command}
        if payload is not None:
            body["payload"] = payload
        response = self.http.post(
            f"/clients/{client_id}/commands", json=body, headers=self.headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "pending"
        command_id: str = response.json()["id"]
        return command_id

    def commands(self, client_id: str) -> dict[str, dict[str, Any]]:
        response = self.http.get(
            f"/clients/{client_id}/commands",
            params={"limit": 1000},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        return {command["id"]: command for command in response.json()}

    def wait_until_final(
        self, client_id: str, command_ids: list[str], timeout: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """The commands once each is acked or failed; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            commands = self.commands(client_id)
            wanted = {command_id: commands[command_id] for command_id in command_ids}
            if all(c["status"] in FINAL_STATUSES for c in wanted.values()):
                return wanted
            assert time.monotonic() < deadline, f"not all final: {wanted}"
            time.sleep(0.1)

    def events(self, client_id: str, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get(
            f"/clients/{client_id}/events", params=params, headers=self.headers
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()
        return events

    def wait_for_event(
        self, client_id: str, message: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The newest stored event with this message; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(client_id):
                if event["message"] == message:
                    return event
            assert time.monotonic() < deadline, f"no {message} event stored"
            time.sleep(0.1)


def log_in(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post(
        "/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def crash(server: ServerProcess) -> None:
    """SIGKILL the server and its worker processes, as a power cut would.

    On PostgreSQL the server runs several workers; killing only the parent
    would leave them serving on the port.
    """
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    processes = [parent, *parent.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    server.process.wait(timeout=10)
    psutil.wait_procs(processes, timeout=10)
