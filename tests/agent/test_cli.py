import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

import master_agent
from master_agent.cli import app
from master_agent.state import AgentState, StateStore

SRC_DIR = Path(master_agent.__file__).resolve().parent.parent


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def start_agent(*args: str) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MASTER_AGENT_")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SRC_DIR), env.get("PYTHONPATH")])
    )
    return subprocess.Popen(
        [sys.executable, "-m", "master_agent", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(
    process: subprocess.Popen[str], event: str
) -> list[dict[str, object]]:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if seen[-1]["event"] == event:
            return seen
    raise AssertionError(f"no {event} line in {seen}")


def registered_state_dir(tmp_path: Path, server: str) -> Path:
    state_dir = tmp_path / "state"
    StateStore(state_dir).save(
        AgentState(
            client_id="4a0c1f6e-8d1b-4b9a-9a57-0f1e2d3c4b5a",
            token="tok-secret-cli",
            server=server,
            registered_at=datetime.now(UTC),
        )
    )
    return state_dir


def test_missing_settings_exit_with_code_2_and_say_what_is_missing() -> None:
    result = CliRunner().invoke(app, ["run"], env={"MASTER_AGENT_SERVER": ""})

    assert result.exit_code == 2
    assert "server is required" in result.stderr
    assert "state_dir is required" in result.stderr


def test_a_first_run_without_a_key_exits_2_with_a_clear_message(
    tmp_path: Path,
) -> None:
    process = start_agent(
        "--server", closed_port_url(), "--state-dir", str(tmp_path / "state")
    )

    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 2
    assert "not registered yet" in stderr
    assert "--provision-key" in stderr


def test_sigterm_stops_the_agent_cleanly_even_while_the_server_is_down(
    tmp_path: Path,
) -> None:
    server = closed_port_url()
    state_dir = registered_state_dir(tmp_path, server)
    process = start_agent("--server", server, "--state-dir", str(state_dir))
    wait_for_line(process, "server.unreachable")

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stdout.splitlines()]
    assert events[-2:] == ["agent.stopping", "agent.stopped"]
    assert "tok-secret-cli" not in stdout


def test_sigint_stops_the_agent_cleanly(tmp_path: Path) -> None:
    server = closed_port_url()
    state_dir = registered_state_dir(tmp_path, server)
    process = start_agent("--server", server, "--state-dir", str(state_dir))
    wait_for_line(process, "server.unreachable")

    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)

    assert process.returncode == 0
