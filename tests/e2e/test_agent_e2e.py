"""The whole loop with real processes: a `master-server` and `master-agent`s,
talking over real HTTP, on SQLite and on PostgreSQL.
"""

import json

import pytest

from tests.e2e.operator import Operator, crash
from tests.fixtures.agent import AgentFactory
from tests.fixtures.server import ServerProcess

pytestmark = pytest.mark.e2e

PAYLOAD = {"greeting": "hello", "n": 3, "nested": {"list": [1, 2.5, None, True]}}


def test_an_agent_registers_shows_online_and_answers_an_echo(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-kitchen")
    assert operator.client(pi.id)["status"] == "unregistered"

    agent = start_agent(server.url, pi.provision_key)

    assert agent.wait_for_event("agent.registered")["client_id"] == pi.id
    agent.wait_for_event("heartbeat.sent")
    shown = operator.wait_for_status(pi.id, "online")
    assert shown["registered_at"] is not None
    assert shown["last_seen_at"] is not None

    command_id = operator.send(pi.id, "echo", PAYLOAD)

    command = operator.wait_until_final(pi.id, [command_id])[command_id]
    assert command["status"] == "acked"
    assert command["result"] == PAYLOAD
    assert command["sent_at"] is not None
    assert command["acked_at"] is not None
    agent.wait_for_event("command.acknowledged", command_id=command_id)
    state_file = agent.state_dir / "state.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    token = json.loads(state_file.read_text())["token"]
    for secret in (pi.provision_key, token):
        assert secret not in agent.log_path.read_text()
        assert secret not in server.log_path.read_text()


def test_an_agent_outlives_a_server_crash_and_loses_no_ack(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-garage")
    agent = start_agent(
        server.url, pi.provision_key, extra_args=["--exec-allow", "sleep 2"]
    )
    agent.wait_for_event("agent.ready")
    running = operator.send(pi.id, "exec", {"command": "sleep 2"})
    queued = operator.send(pi.id, "echo", {"queued": True})
    agent.wait_for_event("command.received", command_id=running)

    crash(server)
    crashed_at = agent.mark()
    agent.wait_for_event("server.unreachable", after=crashed_at)
    # The exec ends while the server is down: its ack waits on disk.
    agent.wait_for_event("command.ack_deferred", command_id=running)
    server.start()

    agent.wait_for_event("server.reachable", after=crashed_at)
    after_restart = operator.send(pi.id, "echo", {"after": "restart"})
    commands = operator.wait_until_final(pi.id, [running, queued, after_restart])
    assert {command["status"] for command in commands.values()} == {"acked"}
    assert commands[running]["result"]["exit_code"] == 0
    assert commands[running]["result"]["timed_out"] is False
    assert commands[queued]["result"] == {"queued": True}
    assert commands[after_restart]["result"] == {"after": "restart"}
    assert agent.returncode is None
    assert not list((agent.state_dir / "outbox").glob("*.json"))


def test_revoking_the_key_stops_the_agent_with_a_message_to_reprovision(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-attic")
    agent = start_agent(server.url, pi.provision_key)
    agent.wait_for_event("agent.ready")

    new_key = operator.new_provision_key(pi.id)

    assert agent.wait() == 2
    agent.wait_for_event("agent.token_rejected")
    assert "re-provision" in agent.stderr
    assert f"POST /clients/{pi.id}/provision-key" in agent.stderr
    assert str(agent.state_dir) in agent.stderr
    assert new_key not in agent.stderr

    # Doing what the message says brings the same client back.
    (agent.state_dir / "state.json").unlink()
    agent.provision_key = new_key
    mark = agent.start().mark()
    assert agent.wait_for_event("agent.registered", after=mark)["client_id"] == pi.id
    agent.wait_for_event("agent.ready", after=mark)
    operator.wait_for_status(pi.id, "online")


def test_a_second_agent_with_a_used_key_is_refused_and_the_first_keeps_working(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-porch")
    first = start_agent(server.url, pi.provision_key, name="first")
    first.wait_for_event("agent.ready")

    second = start_agent(server.url, pi.provision_key, name="second")

    assert second.wait() == 2
    assert "provision key invalid or already used" in second.stderr
    assert "--provision-key NEW_KEY" in second.stderr
    assert not (second.state_dir / "state.json").exists()
    second.wait_for_event("agent.provision_key_rejected")
    command_id = operator.send(pi.id, "echo", {"still": "here"})
    command = operator.wait_until_final(pi.id, [command_id])[command_id]
    assert command["status"] == "acked"
    assert command["result"] == {"still": "here"}
    assert first.returncode is None
    assert not first.events_named("agent.token_rejected")


def test_a_restarted_agent_reuses_its_state_and_reports_a_clean_stop(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-shed")
    agent = start_agent(server.url, pi.provision_key)
    agent.wait_for_event("agent.ready")
    assert agent.stop() == 0

    agent.provision_key = None
    mark = agent.start().mark()

    loaded = agent.wait_for_event("agent.state_loaded", after=mark)
    assert loaded["client_id"] == pi.id
    agent.wait_for_event("agent.ready", after=mark)
    assert not agent.events_named("agent.registered")[1:]
    command_id = operator.send(pi.id, "ping")
    assert operator.wait_until_final(pi.id, [command_id])[command_id]["status"] == (
        "acked"
    )
    assert agent.stop() == 0
    stopped = agent.wait_for_event("agent.stopped", after=mark)
    assert stopped["stopped_event_sent"] is True
    assert agent.stderr == ""
    stored = operator.wait_for_event(pi.id, "agent.stopped")
    assert stored["level"] == "info"
    messages = [event["message"] for event in operator.events(pi.id)]
    assert messages.count("agent.started") == 2
    assert messages.count("agent.stopped") == 2


def test_an_ack_kept_on_disk_outlives_an_agent_restart_during_an_outage(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-cellar")
    agent = start_agent(
        server.url, pi.provision_key, extra_args=["--exec-allow", "sleep 1"]
    )
    agent.wait_for_event("agent.ready")
    command_id = operator.send(pi.id, "exec", {"command": "sleep 1"})
    agent.wait_for_event("command.received", command_id=command_id)

    crash(server)
    agent.wait_for_event("command.ack_deferred", command_id=command_id)
    assert agent.stop() == 0
    assert agent.wait_for_event("agent.stopped")["unsent_acks"] == 1
    server.start()
    mark = agent.start().mark()

    agent.wait_for_event("command.acknowledged", after=mark, command_id=command_id)
    command = operator.wait_until_final(pi.id, [command_id])[command_id]
    assert command["status"] == "acked"
    assert command["result"]["exit_code"] == 0
    assert len(agent.events_named("command.received", command_id=command_id)) == 1


def test_a_command_cut_short_by_an_agent_crash_is_failed_and_never_run_again(
    server: ServerProcess, operator: Operator, start_agent: AgentFactory
) -> None:
    pi = operator.create_client("pi-loft")
    agent = start_agent(
        server.url, pi.provision_key, extra_args=["--exec-allow", "sleep 5"]
    )
    agent.wait_for_event("agent.ready")
    command_id = operator.send(pi.id, "exec", {"command": "sleep 5"})
    agent.wait_for_event("command.received", command_id=command_id)

    agent.kill()
    mark = agent.start().mark()

    agent.wait_for_event("command.interrupted", after=mark, command_id=command_id)
    command = operator.wait_until_final(pi.id, [command_id])[command_id]
    assert command["status"] == "failed"
    assert command["result"]["error"].startswith("interrupted")
    assert len(agent.events_named("command.received", command_id=command_id)) == 1
