import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from master_agent.handlers import (
    CommandFailed,
    Exec,
    HandlerRegistry,
    build_registry,
)

PYTHON = sys.executable


def registry(*exec_allow: str, applied: list[float] | None = None) -> HandlerRegistry:
    intervals = applied if applied is not None else []

    def apply(seconds: float) -> float:
        intervals.append(seconds)
        return 30.0

    return build_registry(exec_allow=exec_allow, set_heartbeat_interval=apply)


def python_command(code: str) -> str:
    # A command line made of a quoted interpreter path and a quoted script.
    return f"'{PYTHON}' -c '{code}'"


async def test_ping_answers_with_the_device_time_in_utc() -> None:
    outcome = await registry().dispatch("ping", None)

    assert outcome.status == "acked"
    answered = datetime.fromisoformat(outcome.result["time"])
    assert outcome.result["time"].endswith("Z")
    assert answered.utcoffset() is not None
    assert abs((datetime.now(UTC) - answered).total_seconds()) < 5


@pytest.mark.parametrize("payload", [{"a": [1, 2, {"b": None}]}, None, "text"])
async def test_echo_returns_its_payload(payload: Any) -> None:
    outcome = await registry().dispatch("echo", payload)

    assert outcome.status == "acked"
    assert outcome.result == payload


async def test_an_unknown_command_fails_with_its_name() -> None:
    outcome = await registry().dispatch("reboot", {})

    assert outcome.status == "failed"
    assert outcome.result == {"error": "unknown command: reboot"}


async def test_set_heartbeat_interval_applies_the_new_interval() -> None:
    applied: list[float] = []

    outcome = await registry(applied=applied).dispatch(
        "set-heartbeat-interval", {"seconds": 12}
    )

    assert outcome.status == "acked"
    assert applied == [12.0]
    assert outcome.result == {
        "heartbeat_interval_seconds": 12.0,
        "previous_seconds": 30.0,
    }


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"seconds": 0},
        {"seconds": 0.5},
        {"seconds": 86401},
        {"seconds": "10"},
        {"seconds": True},
        {"seconds": float("nan")},
    ],
)
async def test_set_heartbeat_interval_refuses_bad_values(payload: Any) -> None:
    applied: list[float] = []

    outcome = await registry(applied=applied).dispatch(
        "set-heartbeat-interval", payload
    )

    assert outcome.status == "failed"
    assert "error" in outcome.result
    assert applied == []


async def test_a_crashing_handler_fails_the_command_and_is_flagged() -> None:
    reg = HandlerRegistry()

    async def broken(payload: Any) -> Any:
        raise KeyError("missing")

    reg.register("broken", broken)

    outcome = await reg.dispatch("broken", None)

    assert outcome.status == "failed"
    assert outcome.is_crash
    assert "KeyError" in outcome.result["error"]


async def test_a_handler_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError):
        registry().register("echo", lambda payload: asyncio.sleep(0))


async def test_exec_is_off_without_an_allowlist() -> None:
    outcome = await registry().dispatch("exec", {"command": "uptime"})

    assert outcome.status == "failed"
    assert "disabled" in outcome.result["error"]


async def test_exec_runs_an_allowlisted_command_and_returns_its_output() -> None:
    command = python_command('print("out"); import sys; sys.stderr.write("err")')

    outcome = await registry(command).dispatch("exec", {"command": command})

    assert outcome.status == "acked"
    assert outcome.result == {
        "exit_code": 0,
        "stdout": "out\n",
        "stderr": "err",
        "truncated": False,
        "timed_out": False,
    }


@pytest.mark.parametrize(
    "requested",
    ["echo hi", "echo  hi", "echo hi; rm -rf /", "echo hi ", "echo"],
)
async def test_exec_refuses_anything_but_an_exact_allowlisted_string(
    requested: str,
) -> None:
    outcome = await registry("echo hi").dispatch("exec", {"command": requested})

    if requested == "echo hi":
        assert outcome.status == "acked"
        assert outcome.result["stdout"] == "hi\n"
    else:
        assert outcome.status == "failed"
        assert outcome.result["error"] == f"command not allowed: {requested}"


async def test_exec_passes_shell_syntax_as_plain_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-shell"
    command = f"echo hi; touch {marker} && echo $HOME `id`"

    outcome = await registry(command).dispatch("exec", {"command": command})

    assert outcome.status == "acked"
    assert outcome.result["stdout"] == f"hi; touch {marker} && echo $HOME `id`\n"
    assert not marker.exists()


async def test_exec_reports_a_non_zero_exit_as_a_failure_with_its_output() -> None:
    command = python_command('print("partial"); raise SystemExit(3)')

    outcome = await registry(command).dispatch("exec", {"command": command})

    assert outcome.status == "failed"
    assert outcome.result["exit_code"] == 3
    assert outcome.result["stdout"] == "partial\n"
    assert outcome.result["error"] == "exit code 3"


async def test_exec_kills_a_command_that_outlives_its_timeout() -> None:
    command = python_command(
        'import time; print("started", flush=True); time.sleep(30)'
    )
    started = time.monotonic()

    outcome = await registry(command).dispatch(
        "exec", {"command": command, "timeout_seconds": 0.5}
    )

    assert time.monotonic() - started < 5
    assert outcome.status == "failed"
    assert outcome.result["timed_out"] is True
    assert outcome.result["exit_code"] is None
    assert outcome.result["stdout"] == "started\n"
    assert outcome.result["error"] == "timed out after 0.5 s"


async def test_exec_timeout_kills_the_commands_children_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time; "
        'sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]; '
        "child = subprocess.Popen(sleeper); "
        f'open("{pid_file}", "w").write(str(child.pid)); time.sleep(30)'
    )
    command = python_command(code)

    outcome = await registry(command).dispatch(
        "exec", {"command": command, "timeout_seconds": 1}
    )

    assert outcome.result["timed_out"] is True
    child_pid = int(pid_file.read_text())
    await asyncio.sleep(0.2)
    assert not _is_running(child_pid)


def _is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z"


async def test_exec_caps_each_output_stream_and_says_so() -> None:
    command = python_command('import sys; sys.stdout.write("x" * 200000)')
    handler = Exec([command], output_limit_bytes=1000)

    result = await handler({"command": command})

    assert result["stdout"] == "x" * 1000
    assert result["truncated"] is True
    assert result["exit_code"] == 0


async def test_exec_results_fit_the_servers_64_kib_limit_on_results() -> None:
    command = python_command(
        'import sys; sys.stdout.write("\\x01" * 200000); '
        'sys.stderr.buffer.write(b"\\xff" * 200000)'
    )

    outcome = await registry(command).dispatch("exec", {"command": command})

    serialized = json.dumps(outcome.result, separators=(",", ":"), ensure_ascii=False)
    assert len(serialized.encode()) <= 64 * 1024
    assert outcome.result["truncated"] is True
    assert outcome.result["stdout"] and outcome.result["stderr"]


async def test_exec_output_never_carries_nul_characters() -> None:
    command = python_command('import sys; sys.stdout.buffer.write(b"a\\x00b\\xff")')

    outcome = await registry(command).dispatch("exec", {"command": command})

    assert outcome.result["stdout"] == "a\ufffdb\ufffd"


async def test_exec_reports_a_command_that_cannot_start() -> None:
    command = "/nonexistent/binary --flag"

    outcome = await registry(command).dispatch("exec", {"command": command})

    assert outcome.status == "failed"
    assert outcome.result["error"].startswith("cannot start /nonexistent/binary")
    assert not outcome.is_crash


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "uptime",
        {"command": ["uptime"]},
        {"command": "uptime", "timeout_seconds": 0},
        {"command": "uptime", "timeout_seconds": "5"},
        {"command": "uptime", "timeout_seconds": 999999},
    ],
)
async def test_exec_refuses_a_malformed_payload(payload: Any) -> None:
    outcome = await registry("uptime").dispatch("exec", payload)

    assert outcome.status == "failed"
    assert not outcome.is_crash


async def test_exec_kills_the_command_when_the_agent_stops(tmp_path: Path) -> None:
    pid_file = tmp_path / "command.pid"
    command = python_command(
        f'import os, time; open("{pid_file}", "w").write(str(os.getpid())); '
        "time.sleep(30)"
    )
    task = asyncio.create_task(registry(command).dispatch("exec", {"command": command}))
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.05)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _is_running(int(pid_file.read_text()))


def test_command_failed_puts_its_reason_in_the_result() -> None:
    failure = CommandFailed("nope", {"exit_code": 1})

    assert failure.result == {"exit_code": 1, "error": "nope"}
