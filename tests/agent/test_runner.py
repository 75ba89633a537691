import asyncio
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from master_agent.config import AgentConfig
from master_agent.runner import Agent, AgentFatal, ExitCode
from master_agent.state import AgentState, Outbox, PendingAck, StateStore

from .fakes import FakeServer

MakeConfig = Callable[..., AgentConfig]


class Running:
    """An agent running in the background against the fake server."""

    def __init__(self, config: AgentConfig, server: FakeServer) -> None:
        self.agent = Agent(
            config, transport=server.transport(), backoff_base_seconds=0.01
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.agent.run(self.stop))

    async def until(self, condition: Callable[[], bool], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the agent ended before the condition held")
                await asyncio.sleep(0.01)

    async def stopped(self) -> ExitCode:
        self.stop.set()
        async with asyncio.timeout(10):
            return await self.task

    async def ended(self) -> ExitCode:
        async with asyncio.timeout(10):
            return await self.task


def ack_of(
    command_id: str, result: Any, status: Literal["acked", "failed"] = "acked"
) -> PendingAck:
    return PendingAck(
        command_id=command_id,
        command="echo",
        status=status,
        result=result,
        finished_at=datetime.now(UTC),
    )


def store_ack(state_dir: Path, ack: PendingAck) -> None:
    outbox = Outbox(state_dir)
    outbox.open()
    outbox.put(ack)


def save_registration(state_dir: Path, server: FakeServer) -> None:
    StateStore(state_dir).save(
        AgentState(
            client_id=server.client_id,
            token=server.token,
            server="http://master.test",
            registered_at=datetime.now(UTC),
        )
    )


async def test_first_run_registers_keeps_the_token_private_and_reports_in(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    with capture_logs() as logs:
        running = Running(make_config(service_port=8022), fake_server)
        await running.until(lambda: len(fake_server.heartbeats) >= 2)
        code = await running.stopped()

    assert code == ExitCode.OK
    state = StateStore(state_dir).load()
    assert state is not None
    assert (state.client_id, state.token) == (fake_server.client_id, fake_server.token)
    assert stat.S_IMODE((state_dir / "state.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert fake_server.event_messages() == ["agent.started", "agent.stopped"]
    assert {"uptime_s", "metrics"} <= set(fake_server.heartbeats[0])
    events = [entry["event"] for entry in logs]
    assert events.index("agent.registered") < events.index("agent.ready")
    registered = next(e for e in logs if e["event"] == "agent.registered")
    assert registered["client_id"] == fake_server.client_id
    assert all(fake_server.token not in repr(entry) for entry in logs)
    assert all("pk-test" not in repr(entry) for entry in logs)


async def test_registration_reports_the_configured_service_port(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    running = Running(make_config(service_port=8022), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)
    await running.stopped()

    register = fake_server.requests[0]
    network = next(r for r in fake_server.requests if r.method == "PATCH")
    assert b'"service_port":8022' in register.content.replace(b" ", b"")
    assert b'"service_port":8022' in network.content.replace(b" ", b"")


async def test_a_later_run_reuses_the_saved_state_and_needs_no_key(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    save_registration(state_dir, fake_server)

    running = Running(make_config(provision_key=None), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)
    code = await running.stopped()

    assert code == ExitCode.OK
    assert all(r.url.path != "/clients/register" for r in fake_server.requests)


async def test_without_state_or_key_the_agent_asks_for_a_key(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    running = Running(make_config(provision_key=None), fake_server)

    with pytest.raises(AgentFatal) as caught:
        await running.ended()

    assert caught.value.exit_code == ExitCode.NEEDS_OPERATOR
    assert "--provision-key" in caught.value.message
    assert fake_server.requests == []


async def test_a_refused_provision_key_stops_the_agent_with_exit_code_2(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    fake_server.status_for[("POST", "/clients/register")] = 401

    running = Running(make_config(), fake_server)
    with pytest.raises(AgentFatal) as caught:
        await running.ended()

    assert caught.value.exit_code == ExitCode.NEEDS_OPERATOR
    assert "provision key invalid or already used" in caught.value.message
    assert StateStore(state_dir).load() is None


async def test_registration_waits_out_a_server_that_is_down(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    fake_server.down = True
    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.requests) >= 3)

    fake_server.down = False
    await running.until(lambda: len(fake_server.heartbeats) >= 1)

    assert await running.stopped() == ExitCode.OK


async def test_a_revoked_token_stops_the_agent_with_a_re_provision_message(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)

    fake_server.token = "revoked"
    with pytest.raises(AgentFatal) as caught:
        await running.ended()

    assert caught.value.exit_code == ExitCode.NEEDS_OPERATOR
    assert "re-provision" in caught.value.message
    assert str(state_dir) in caught.value.message
    assert f"/clients/{fake_server.client_id}/provision-key" in caught.value.message


async def test_a_command_is_run_and_acked_with_its_result(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    echo_id = fake_server.enqueue("echo", {"hello": "world"})
    unknown_id = fake_server.enqueue("self-destruct")

    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.acks) == 2)
    await running.until(lambda: "command.failed" in fake_server.event_messages())
    await running.stopped()

    assert fake_server.acks[echo_id] == {
        "status": "acked",
        "result": {"hello": "world"},
    }
    assert fake_server.acks[unknown_id] == {
        "status": "failed",
        "result": {"error": "unknown command: self-destruct"},
    }
    failure = next(e for e in fake_server.events if e["message"] == "command.failed")
    assert failure["level"] == "warn"
    assert failure["data"]["command_id"] == unknown_id
    assert Outbox(state_dir).pending() == []


async def test_set_heartbeat_interval_changes_the_running_interval(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    command_id = fake_server.enqueue("set-heartbeat-interval", {"seconds": 42})

    running = Running(make_config(), fake_server)
    await running.until(lambda: command_id in fake_server.acks)
    await running.stopped()

    assert running.agent.heartbeat_interval == 42
    assert fake_server.acks[command_id]["status"] == "acked"


async def test_an_ack_survives_a_server_outage_and_is_sent_on_recovery(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    fake_server.status_for[("POST", "/ack")] = 503
    command_id = fake_server.enqueue("echo", {"n": 1})

    running = Running(make_config(), fake_server)
    await running.until(lambda: Outbox(state_dir).contains(command_id))
    await running.until(
        lambda: sum(r.url.path.endswith("/ack") for r in fake_server.requests) >= 3
    )
    assert command_id not in fake_server.acks

    del fake_server.status_for[("POST", "/ack")]
    await running.until(lambda: command_id in fake_server.acks)
    await running.stopped()

    assert fake_server.acks[command_id] == {"status": "acked", "result": {"n": 1}}
    assert not Outbox(state_dir).contains(command_id)


async def test_an_ack_left_by_a_previous_run_is_sent_at_start(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    save_registration(state_dir, fake_server)
    store_ack(state_dir, ack_of("cmd-from-before", {"kept": True}))

    running = Running(make_config(), fake_server)
    await running.until(lambda: "cmd-from-before" in fake_server.acks)
    await running.stopped()

    assert fake_server.acks["cmd-from-before"]["result"] == {"kept": True}
    assert Outbox(state_dir).pending() == []


async def test_a_redelivered_command_whose_ack_is_stored_is_not_run_again(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    save_registration(state_dir, fake_server)
    fake_server.status_for[("POST", "/ack")] = 503
    command_id = fake_server.enqueue("set-heartbeat-interval", {"seconds": 99})
    fake_server.pending[0]["id"] = "cmd-seen"
    store_ack(state_dir, ack_of("cmd-seen", {"first": "run"}))

    running = Running(make_config(), fake_server)
    await running.until(lambda: not fake_server.pending)
    del fake_server.status_for[("POST", "/ack")]
    await running.until(lambda: "cmd-seen" in fake_server.acks)
    await running.stopped()

    assert command_id != "cmd-seen"
    assert fake_server.acks["cmd-seen"]["result"] == {"first": "run"}
    assert running.agent.heartbeat_interval == 0.1


async def test_a_conflicting_ack_is_dropped_from_the_outbox(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    save_registration(state_dir, fake_server)
    fake_server.acks["cmd-conflict"] = {"status": "failed", "result": None}
    store_ack(state_dir, ack_of("cmd-conflict", {"late": True}))

    with capture_logs() as logs:
        running = Running(make_config(), fake_server)
        await running.until(lambda: Outbox(state_dir).pending() == [])
        await running.stopped()

    assert fake_server.acks["cmd-conflict"]["status"] == "failed"
    assert any(entry["event"] == "command.ack_conflict" for entry in logs)


async def test_a_refused_result_is_replaced_by_a_short_failure(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    fake_server.refuse_ack = lambda body: body["status"] == "acked"
    command_id = fake_server.enqueue("echo", {"big": "x" * 1000})

    running = Running(make_config(), fake_server)
    await running.until(lambda: command_id in fake_server.acks)
    await running.stopped()

    ack = fake_server.acks[command_id]
    assert ack["status"] == "failed"
    assert ack["result"]["error"].startswith("the server refused the command's result")
    assert Outbox(state_dir).pending() == []


async def test_an_ack_refused_even_when_shrunk_is_set_aside(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    fake_server.refuse_ack = lambda body: True
    command_id = fake_server.enqueue("echo", {"n": 1})

    running = Running(make_config(), fake_server)
    await running.until(
        lambda: (state_dir / "outbox" / "rejected" / f"{command_id}.json").exists()
    )
    await running.stopped()

    assert command_id not in fake_server.acks
    assert Outbox(state_dir).pending() == []


async def test_a_command_cut_short_by_a_crash_is_acked_failed_at_start(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    save_registration(state_dir, fake_server)
    outbox = Outbox(state_dir)
    outbox.open()
    outbox.begin("cmd-crashed")

    running = Running(make_config(), fake_server)
    await running.until(lambda: "cmd-crashed" in fake_server.acks)
    await running.stopped()

    assert fake_server.acks["cmd-crashed"]["status"] == "failed"
    assert "interrupted" in fake_server.acks["cmd-crashed"]["result"]["error"]


async def test_stopping_mid_command_kills_it_and_acks_it_failed(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    command = "sleep 30"
    command_id = fake_server.enqueue("exec", {"command": command})

    running = Running(make_config(exec_allow=[command]), fake_server)
    await running.until(lambda: Outbox(state_dir).is_inflight(command_id))
    code = await running.stopped()

    assert code == ExitCode.OK
    assert fake_server.acks[command_id]["status"] == "failed"
    assert "interrupted" in fake_server.acks[command_id]["result"]["error"]
    assert fake_server.event_messages()[-1] == "agent.stopped"


async def test_heartbeats_continue_after_the_server_comes_back(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)

    with capture_logs() as logs:
        fake_server.down = True
        await running.until(
            lambda: any(e["event"] == "server.unreachable" for e in logs)
        )
        fake_server.down = False
        seen = len(fake_server.heartbeats)
        await running.until(lambda: len(fake_server.heartbeats) > seen + 1)

    assert await running.stopped() == ExitCode.OK
    assert any(e["event"] == "server.reachable" for e in logs)


async def test_a_second_agent_on_the_same_state_directory_is_refused(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    first = Running(make_config(), fake_server)
    await first.until(lambda: len(fake_server.heartbeats) >= 1)

    second = Running(make_config(), fake_server)
    with pytest.raises(AgentFatal, match="already running"):
        await second.ended()

    assert await first.stopped() == ExitCode.OK


async def test_stopping_while_the_server_is_down_still_ends_promptly(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)
    fake_server.down = True

    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await running.stopped()

    assert code == ExitCode.OK
    assert loop.time() - started < 5


async def test_a_server_that_does_not_answer_is_not_polled_after_the_flush(
    make_config: MakeConfig, fake_server: FakeServer, state_dir: Path
) -> None:
    running = Running(make_config(), fake_server)
    await running.until(lambda: len(fake_server.heartbeats) >= 1)

    with capture_logs() as logs:
        fake_server.down = True
        store_ack(state_dir, ack_of("cmd-waiting", {"n": 1}))
        await running.until(
            lambda: sum(r.url.path.endswith("/ack") for r in fake_server.refused) >= 3
        )
        fake_server.down = False
        await running.until(lambda: "cmd-waiting" in fake_server.acks)
    await running.stopped()

    events = [entry["event"] for entry in logs]
    assert "outbox.flush_deferred" not in events
    polls_while_down = [
        r for r in fake_server.refused if r.url.path.endswith("/commands")
    ]
    # At most the one poll that may have been under way when the server went.
    assert len(polls_while_down) <= 1


async def test_a_server_refusing_events_does_not_hold_up_heartbeats_and_polls(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    fake_server.status_for[("POST", "/events")] = 503
    command_id = fake_server.enqueue("echo", {"n": 1})

    running = Running(make_config(), fake_server)
    await running.until(
        lambda: len(fake_server.heartbeats) >= 2 and command_id in fake_server.acks
    )
    fake_server.status_for.clear()
    await running.until(lambda: "agent.started" in fake_server.event_messages())
    await running.stopped()


async def test_an_event_being_retried_when_the_agent_stops_is_still_sent(
    make_config: MakeConfig, fake_server: FakeServer
) -> None:
    fake_server.status_for[("POST", "/events")] = 503
    agent = Agent(
        make_config(), transport=fake_server.transport(), backoff_base_seconds=60
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    async with asyncio.timeout(5):
        while not fake_server.heartbeats:
            await asyncio.sleep(0.01)

    fake_server.status_for.clear()
    stop.set()
    async with asyncio.timeout(10):
        assert await task == ExitCode.OK

    assert fake_server.event_messages() == ["agent.started", "agent.stopped"]
