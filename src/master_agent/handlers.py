"""Command handlers: what the agent does with each command it receives.

A handler is an async callable taking the command's payload (any JSON value,
usually an object) and returning the result to ack. It raises `CommandFailed`
to ack ``failed`` with a reason; any other exception is a handler bug and is
acked ``failed`` too, so one bad command never stops the agent.
"""

import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

log = structlog.get_logger("master_agent.handlers")

Handler = Callable[[Any], Awaitable[Any]]

HEARTBEAT_INTERVAL_MIN_SECONDS = 1.0
HEARTBEAT_INTERVAL_MAX_SECONDS = 86400.0
EXEC_DEFAULT_TIMEOUT_SECONDS = 30.0
EXEC_MAX_TIMEOUT_SECONDS = 3600.0
EXEC_OUTPUT_LIMIT_BYTES = 64 * 1024
# The server refuses an ack result over 64 KiB of JSON. The whole exec result
# is trimmed to fit below that, with room left for the "error" field.
EXEC_RESULT_LIMIT_BYTES = 62 * 1024
# After a kill, how long to wait for the pipes to close before giving up on
# output that a stray grandchild may still be holding open.
_EXEC_DRAIN_SECONDS = 2.0


class CommandFailed(Exception):
    """The command could not be carried out; ``result`` goes into the ack."""

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = {**(result or {}), "error": reason}


@dataclass(frozen=True)
class Outcome:
    status: Literal["acked", "failed"]
    result: Any
    # True when the handler raised something other than CommandFailed: a bug
    # on our side rather than a bad command.
    is_crash: bool = False


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if name in self._handlers:
            raise ValueError(f"a handler for {name!r} is already registered")
        self._handlers[name] = handler

    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(self, command: str, payload: Any) -> Outcome:
        handler = self._handlers.get(command)
        if handler is None:
            return Outcome("failed", {"error": f"unknown command: {command}"})

        try:
            result = await handler(payload)
        except CommandFailed as exc:
            return Outcome("failed", exc.result)
        except Exception as exc:
            log.exception("command.handler_crashed", command=command)
            return Outcome(
                "failed",
                {"error": f"handler error: {type(exc).__name__}: {exc}"},
                is_crash=True,
            )
        return Outcome("acked", result)


def _payload_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise CommandFailed("payload must be a JSON object")
    return payload


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


async def ping(payload: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


async def echo(payload: Any) -> Any:
    return payload


class SetHeartbeatInterval:
    """Payload ``{"seconds": n}``; changes the running interval (not persisted)."""

    def __init__(self, apply: Callable[[float], float]) -> None:
        # ``apply`` sets the new interval and returns the previous one.
        self._apply = apply

    async def __call__(self, payload: Any) -> dict[str, Any]:
        seconds = _number(_payload_object(payload).get("seconds"))
        if seconds is None or not (
            HEARTBEAT_INTERVAL_MIN_SECONDS <= seconds <= HEARTBEAT_INTERVAL_MAX_SECONDS
        ):
            raise CommandFailed(
                "seconds must be a number from "
                f"{HEARTBEAT_INTERVAL_MIN_SECONDS:g} to "
                f"{HEARTBEAT_INTERVAL_MAX_SECONDS:g}"
            )

        previous = self._apply(seconds)
        return {"heartbeat_interval_seconds": seconds, "previous_seconds": previous}


class _CappedBuffer:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.data = bytearray()
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        # Keep reading past the cap: a child blocked on a full pipe would
        # otherwise never exit.
        while chunk := await stream.read(65536):
            room = self.limit_bytes - len(self.data)
            if len(chunk) > room:
                self.truncated = True
            self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        # The server refuses NUL in text (PostgreSQL cannot store it), so
        # binary output is made printable rather than turned into a refused ack.
        text = self.data.decode("utf-8", errors="replace")
        return text.replace("\x00", "\ufffd")


class Exec:
    """Run one allowlisted command line, exactly as configured, without a shell.

    Payload ``{"command": "df -h", "timeout_seconds"?: n}``. The result is
    ``{"exit_code", "stdout", "stderr", "truncated", "timed_out"}``: each stream
    is read up to `EXEC_OUTPUT_LIMIT_BYTES`, then both are trimmed until the
    result fits in `EXEC_RESULT_LIMIT_BYTES` of JSON. A non-zero exit or a
    timeout acks ``failed`` with the same result plus ``error``.
    """

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        output_limit_bytes: int = EXEC_OUTPUT_LIMIT_BYTES,
        result_limit_bytes: int = EXEC_RESULT_LIMIT_BYTES,
    ) -> None:
        self._argv_by_command = {command: shlex.split(command) for command in allowed}
        self._output_limit_bytes = output_limit_bytes
        self._result_limit_bytes = result_limit_bytes

    async def __call__(self, payload: Any) -> dict[str, Any]:
        if not self._argv_by_command:
            raise CommandFailed("exec is disabled: no command is allowlisted")
        request = _payload_object(payload)
        command = request.get("command")
        if not isinstance(command, str):
            raise CommandFailed("command must be a string")
        argv = self._argv_by_command.get(command)
        if argv is None:
            raise CommandFailed(f"command not allowed: {command}")
        timeout_seconds = EXEC_DEFAULT_TIMEOUT_SECONDS
        if "timeout_seconds" in request:
            timeout = _number(request["timeout_seconds"])
            if timeout is None or not 0 < timeout <= EXEC_MAX_TIMEOUT_SECONDS:
                raise CommandFailed(
                    "timeout_seconds must be a number above 0 and at most "
                    f"{EXEC_MAX_TIMEOUT_SECONDS:g}"
                )
            timeout_seconds = timeout

        return await self._run(argv, timeout_seconds)

    async def _run(self, argv: list[str], timeout_seconds: float) -> dict[str, Any]:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own process group, so a timeout kills its children too.
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(f"cannot start {argv[0]}: {exc.strerror}") from None

        stdout = _CappedBuffer(self._output_limit_bytes)
        stderr = _CappedBuffer(self._output_limit_bytes)
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(stdout.drain(process.stdout)),
            asyncio.create_task(stderr.drain(process.stderr)),
        ]
        timed_out = False
        try:
            async with asyncio.timeout(timeout_seconds):
                # asyncio.wait, unlike gather, leaves the readers running on a
                # timeout, so the output written before the kill is kept.
                await asyncio.wait(readers)
                await process.wait()
        except TimeoutError:
            timed_out = True
        finally:
            # Also reached when the agent is stopped mid-command.
            if process.returncode is None:
                _kill_group(process.pid)
            _, still_reading = await asyncio.wait(readers, timeout=_EXEC_DRAIN_SECONDS)
            for reader in still_reading:
                reader.cancel()
            await process.wait()
        for reader in readers:
            if not reader.cancelled() and (error := reader.exception()) is not None:
                raise error

        result: dict[str, Any] = {
            "exit_code": None if timed_out else process.returncode,
            "stdout": stdout.text(),
            "stderr": stderr.text(),
            "truncated": stdout.truncated or stderr.truncated,
            "timed_out": timed_out,
        }
        _trim_to_fit(result, self._result_limit_bytes)
        if timed_out:
            raise CommandFailed(f"timed out after {timeout_seconds:g} s", result)
        if process.returncode != 0:
            raise CommandFailed(_describe_exit(process.returncode), result)
        return result


def _json_size(value: Any) -> int:
    # Measured the way the server measures: compact, UTF-8, no ASCII escapes.
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _trim_to_fit(result: dict[str, Any], limit_bytes: int) -> None:
    """Cut the ends of stdout and stderr so that ``result`` fits.

    When both are long each keeps half the room; a short one keeps all of
    itself and leaves the rest to the other.
    """
    streams = ("stdout", "stderr")
    room = limit_bytes - _json_size({**result, "stdout": "", "stderr": ""})
    sizes = {name: _json_size(result[name]) - 2 for name in streams}
    if sum(sizes.values()) <= room:
        return

    smaller, bigger = sorted(streams, key=sizes.__getitem__)
    shares = {smaller: min(sizes[smaller], room // 2)}
    shares[bigger] = room - shares[smaller]
    for name in streams:
        if sizes[name] > shares[name]:
            result[name] = _prefix_within(result[name], shares[name])
    result["truncated"] = True


def _prefix_within(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` that serializes to at most ``max_bytes``."""
    # A character takes one byte ("a") to six ("\u0001") once serialized, so
    # the cut point is searched for rather than computed.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(text[:middle]) - 2 <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit code {returncode}"


def build_registry(
    *, exec_allow: Iterable[str], set_heartbeat_interval: Callable[[float], float]
) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("ping", ping)
    registry.register("echo", echo)
    registry.register(
        "set-heartbeat-interval", SetHeartbeatInterval(set_heartbeat_interval)
    )
    registry.register("exec", Exec(exec_allow))
    return registry
