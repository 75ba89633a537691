"""What the agent keeps on disk, in its state directory::

    state.json          client id and token (mode 0600)
    agent.lock          held while an agent runs, so two cannot share the directory
    outbox/<id>.json    a finished command's ack, until the server has it
    outbox/rejected/    acks the server refused for good, kept for the operator
    inflight/<id>       a command that is running; left behind only by a crash

Every file is written to a temporary name, fsync'd and renamed into place, so
a crash or power cut leaves either the old file or the new one, never half.
"""

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from master_agent.api import is_valid_id

log = structlog.get_logger("master_agent.state")

STATE_FILE_NAME = "state.json"
LOCK_FILE_NAME = "agent.lock"
_STATE_FORMAT = 1


class StateError(Exception):
    """The state directory cannot be read or written; the message says why."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def write_file_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file."""
    fd, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_directory(directory: Path) -> None:
    existed = directory.is_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed:
        # mkdir's mode is filtered by the umask; set it exactly.
        directory.chmod(0o700)


def _remove_stale_temporaries(directory: Path) -> None:
    for leftover in directory.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


@dataclass(frozen=True)
class AgentState:
    client_id: str
    token: str = field(repr=False)
    server: str
    registered_at: datetime


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE_NAME
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the directory (mode 0700) and take it for this process.

        The lock goes away with the process, however it ends.
        """
        try:
            _make_private_directory(self.state_dir)
            fd = os.open(self.state_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use {self.state_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"another master-agent is already running with {self.state_dir}"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> AgentState | None:
        """The saved state, or None when this agent has never registered."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from None

        self._tighten_permissions()
        try:
            data = json.loads(raw)
            state = AgentState(
                client_id=data["client_id"],
                token=data["token"],
                server=data["server"],
                registered_at=datetime.fromisoformat(data["registered_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.path} is damaged ({type(exc).__name__}); delete the state "
                "directory and provision this client again"
            ) from None
        if not is_valid_id(state.client_id) or not state.token:
            raise StateError(f"{self.path} holds no usable client id or token")
        return state

    def save(self, state: AgentState) -> None:
        document = {
            "format": _STATE_FORMAT,
            "client_id": state.client_id,
            "token": state.token,
            "server": state.server,
            "registered_at": state.registered_at.isoformat(),
        }
        try:
            _make_private_directory(self.state_dir)
            write_file_atomically(self.path, json.dumps(document).encode(), mode=0o600)
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc.strerror}") from None

    def _tighten_permissions(self) -> None:
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "state.permissions_tightened", path=str(self.path), mode=oct(mode)
            )
            self.path.chmod(0o600)


@dataclass(frozen=True)
class PendingAck:
    command_id: str
    command: str
    status: Literal["acked", "failed"]
    result: Any
    finished_at: datetime


class Outbox:
    """Acks of finished commands, kept on disk until the server has them.

    An ack is stored before it is sent and removed only once the server has
    answered, so it survives a server outage and an agent restart. A command
    is marked in flight while it runs; a marker left by a crash turns into a
    failed ack at the next start, so the command is neither lost nor run twice.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "outbox"
        self.rejected_directory = self.directory / "rejected"
        self.inflight_directory = state_dir / "inflight"

    def open(self) -> None:
        """Create the directories and drop temporaries left by a crash."""
        for directory in (
            self.directory,
            self.rejected_directory,
            self.inflight_directory,
        ):
            _make_private_directory(directory)
            _remove_stale_temporaries(directory)

    def put(self, ack: PendingAck) -> None:
        """Store the ack durably; the command stops being in flight."""
        document = {
            "command_id": ack.command_id,
            "command": ack.command,
            "status": ack.status,
            "result": ack.result,
            "finished_at": ack.finished_at.isoformat(),
        }
        data = json.dumps(document, allow_nan=False).encode()
        write_file_atomically(self._ack_path(ack.command_id), data)
        self._inflight_path(ack.command_id).unlink(missing_ok=True)

    def contains(self, command_id: str) -> bool:
        return self._ack_path(command_id).exists()

    def pending(self) -> list[PendingAck]:
        """Stored acks, oldest first. A file that cannot be read is set aside."""
        acks = []
        for path in self.directory.glob("*.json"):
            try:
                acks.append(_read_ack(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("outbox.damaged", path=str(path), error=str(exc))
                path.rename(self.rejected_directory / f"{path.name}.damaged")
        return sorted(acks, key=lambda ack: (ack.finished_at, ack.command_id))

    def remove(self, command_id: str) -> None:
        self._ack_path(command_id).unlink(missing_ok=True)

    def reject(self, command_id: str) -> None:
        """Set aside an ack the server will never take, so it is not resent."""
        with contextlib.suppress(FileNotFoundError):
            self._ack_path(command_id).rename(
                self.rejected_directory / f"{command_id}.json"
            )

    def begin(self, command_id: str) -> None:
        write_file_atomically(
            self._inflight_path(command_id), utc_now().isoformat().encode()
        )

    def is_inflight(self, command_id: str) -> bool:
        return self._inflight_path(command_id).exists()

    def recover_interrupted(self, reason: str) -> list[str]:
        """Turn each in-flight marker left by a crash into a failed ack."""
        recovered = []
        for marker in self.inflight_directory.iterdir():
            command_id = marker.name
            if marker.name.startswith(".") or not is_valid_id(command_id):
                continue
            if not self.contains(command_id):
                self.put(
                    PendingAck(
                        command_id=command_id,
                        command="",
                        status="failed",
                        result={"error": reason},
                        finished_at=utc_now(),
                    )
                )
                recovered.append(command_id)
            marker.unlink(missing_ok=True)
        return recovered

    def _ack_path(self, command_id: str) -> Path:
        return self.directory / f"{_checked(command_id)}.json"

    def _inflight_path(self, command_id: str) -> Path:
        return self.inflight_directory / _checked(command_id)


def _checked(command_id: str) -> str:
    if not is_valid_id(command_id):
        raise ValueError(f"not a usable command id: {command_id!r}")
    return command_id


def _read_ack(path: Path) -> PendingAck:
    data = json.loads(path.read_bytes())
    status = data["status"]
    if status not in ("acked", "failed") or not is_valid_id(data["command_id"]):
        raise ValueError("not an ack")
    return PendingAck(
        command_id=data["command_id"],
        command=str(data.get("command", "")),
        status=status,
        result=data.get("result"),
        finished_at=datetime.fromisoformat(data["finished_at"]),
    )
