"""The agent's life: register, announce itself, then heartbeat, poll and report.

Three loops run side by side once the agent is ready: heartbeats, the command
poll and the event sender. Each one retries a failed request with backoff and
never ends on its own; only a stop request or a 401 ends them.
"""

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import httpx
import structlog

from master_agent import __version__
from master_agent.api import (
    ApiError,
    Conflict,
    Credentials,
    EventLevel,
    PolledCommand,
    RequestRejected,
    ServerApi,
    ServerUnavailable,
    Unauthorized,
)
from master_agent.config import AgentConfig
from master_agent.handlers import Outcome, build_registry
from master_agent.metrics import collect_metrics, uptime_seconds
from master_agent.netinfo import NetworkInfo, collect_network
from master_agent.retry import Backoff
from master_agent.state import (
    AgentState,
    Outbox,
    PendingAck,
    StateError,
    StateStore,
    utc_now,
)

log = structlog.get_logger("master_agent")

T = TypeVar("T")

# Bounds on what is done after a stop request, so that SIGTERM ends the agent
# promptly even when the server hangs.
SHUTDOWN_FLUSH_SECONDS = 2.0
SHUTDOWN_EVENT_SECONDS = 2.0
# Events wait in memory while the server is away; past this many the oldest
# are dropped (acks are never dropped: they live in the outbox).
EVENT_QUEUE_SIZE = 500
# Ids of recently acked commands, so a command delivered twice runs once.
REMEMBERED_ACKS = 1000

# Messages for the operator (stderr) and for command results.
INTERRUPTED_BY_CRASH = "interrupted: the agent stopped before the command finished"
INTERRUPTED_BY_STOP = "interrupted: the agent was stopped while the command ran"
RESULT_REFUSED = "the server refused the command's result"
NOT_REGISTERED = (
    "this client is not registered yet (no state in {state_dir}): pass "
    "--provision-key or set MASTER_AGENT_PROVISION_KEY to the key shown when the "
    "client was created"
)
PROVISION_KEY_REJECTED = (
    "provision key invalid or already used: ask an admin for a new key "
    "(POST /clients/{id}/provision-key) and run again with --provision-key NEW_KEY"
)
TOKEN_REJECTED = (
    "the server refused this client's token: it was revoked or the client was "
    "deleted. To re-provision: delete the state directory {state_dir}, ask an "
    "admin for a new key (POST /clients/{client_id}/provision-key) and run again "
    "with --provision-key NEW_KEY"
)


class ExitCode(IntEnum):
    # Stopped by SIGTERM or SIGINT, after saying goodbye to the server.
    OK = 0
    # A bug: something the agent did not expect ended it.
    ERROR = 1
    # The operator has to act: a refused provision key or token, or unusable
    # configuration or state. Restarting as is would fail the same way.
    NEEDS_OPERATOR = 2


class AgentFatal(Exception):
    """Ends the agent; the message is for the operator and goes to stderr."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class _Event:
    level: EventLevel
    message: str
    data: dict[str, Any] | None


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base_seconds: float = 1.0,
    ) -> None:
        self._config = config
        self._api = ServerApi(
            config.server, timeout_seconds=config.request_timeout, transport=transport
        )
        self._store = StateStore(config.state_dir)
        self._outbox = Outbox(config.state_dir)
        self._backoff_base_seconds = min(backoff_base_seconds, config.backoff_max)
        self._registry = build_registry(
            exec_allow=config.exec_allow,
            set_heartbeat_interval=self.set_heartbeat_interval,
        )

        self._heartbeat_interval = config.heartbeat_interval
        self._heartbeat_interval_changed = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._events: asyncio.Queue[_Event] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._event_in_flight: _Event | None = None
        self._event_send: asyncio.Future[None] | None = None
        self._recently_acked: OrderedDict[str, None] = OrderedDict()
        self._reported_network: NetworkInfo | None = None
        self._credentials: Credentials | None = None
        self._server_unreachable = False
        self._log = log

    @property
    def heartbeat_interval(self) -> float:
        return self._heartbeat_interval

    def set_heartbeat_interval(self, seconds: float) -> float:
        previous, self._heartbeat_interval = self._heartbeat_interval, seconds
        self._heartbeat_interval_changed.set()
        self._log.info(
            "heartbeat.interval_changed",
            heartbeat_interval_seconds=seconds,
            previous_seconds=previous,
        )
        return previous

    async def run(self, stop: asyncio.Event) -> ExitCode:
        """Run until ``stop`` is set (exit 0) or something fatal happens."""
        main = asyncio.create_task(self._main())
        stop_requested = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait(
                {main, stop_requested}, return_when=asyncio.FIRST_COMPLETED
            )
            if main.done():
                self._raise_failure(main)
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
            await self._shutdown()
            return ExitCode.OK
        finally:
            stop_requested.cancel()
            if not main.done():
                main.cancel()
            await self._api.aclose()
            self._store.unlock()

    def _raise_failure(self, main: "asyncio.Task[None]") -> NoReturn:
        error = main.exception()
        if isinstance(error, AgentFatal):
            self._log.error("agent.fatal", reason=error.message)
            raise error
        if error is None:
            raise AgentFatal("the agent's loops ended unexpectedly", ExitCode.ERROR)
        self._log.error(
            "agent.crashed", exc_info=(type(error), error, error.__traceback__)
        )
        raise AgentFatal(f"unexpected error: {error!r}", ExitCode.ERROR)

    async def _main(self) -> None:
        log.info(
            "agent.starting",
            version=__version__,
            server=self._config.server,
            state_dir=str(self._config.state_dir),
        )
        try:
            self._store.lock()
            self._outbox.open()
        except (StateError, OSError) as exc:
            raise AgentFatal(str(exc), ExitCode.NEEDS_OPERATOR) from None

        self._credentials = await self._load_or_register()
        self._api.authenticate(self._credentials)
        self._log = log.bind(client_id=self._credentials.client_id)
        for command_id in self._outbox.recover_interrupted(INTERRUPTED_BY_CRASH):
            self._log.warning("command.interrupted", command_id=command_id)

        try:
            await self._retrying("network.report", self._report_network)
        except Unauthorized as exc:
            raise self._revoked(exc) from None
        # Queued, not awaited: a server that refuses events for a while must not
        # hold up heartbeats and polls.
        self._emit_event("info", "agent.started", self._agent_facts())
        self._log.info(
            "agent.ready",
            heartbeat_interval_seconds=self._heartbeat_interval,
            poll_interval_seconds=self._config.poll_interval,
            commands=self._registry.names(),
            exec_allowed=len(self._config.exec_allow),
        )

        await _run_until_first_failure(
            self._heartbeat_loop(), self._poll_loop(), self._event_loop()
        )

    async def _load_or_register(self) -> Credentials:
        try:
            state = self._store.load()
        except StateError as exc:
            raise AgentFatal(str(exc), ExitCode.NEEDS_OPERATOR) from None

        if state is not None:
            if state.server != self._config.server:
                log.warning(
                    "agent.server_changed",
                    client_id=state.client_id,
                    registered_with=state.server,
                    server=self._config.server,
                )
            log.info(
                "agent.state_loaded",
                client_id=state.client_id,
                state_dir=str(self._config.state_dir),
                provision_key_ignored=self._config.provision_key is not None,
            )
            return Credentials(client_id=state.client_id, token=state.token)

        if self._config.provision_key is None:
            raise AgentFatal(
                NOT_REGISTERED.format(state_dir=self._config.state_dir),
                ExitCode.NEEDS_OPERATOR,
            )
        provision_key = self._config.provision_key.get_secret_value()
        network = self._current_network()

        try:
            credentials = await self._retrying(
                "agent.register", lambda: self._api.register(provision_key, network)
            )
        except Unauthorized:
            log.error("agent.provision_key_rejected", server=self._config.server)
            raise AgentFatal(PROVISION_KEY_REJECTED, ExitCode.NEEDS_OPERATOR) from None
        except RequestRejected as exc:
            log.error("agent.registration_refused", error=exc.message)
            raise AgentFatal(
                f"the server refused the registration: {exc.message}",
                ExitCode.NEEDS_OPERATOR,
            ) from None

        try:
            self._store.save(
                AgentState(
                    client_id=credentials.client_id,
                    token=credentials.token,
                    server=self._config.server,
                    registered_at=utc_now(),
                )
            )
        except StateError as exc:
            raise AgentFatal(
                f"registered as client {credentials.client_id} but {exc}; the key "
                "is now used up, so ask an admin for a new one",
                ExitCode.NEEDS_OPERATOR,
            ) from None
        self._reported_network = network
        log.info(
            "agent.registered",
            client_id=credentials.client_id,
            server=self._config.server,
            state_dir=str(self._config.state_dir),
        )
        return credentials

    # -- heartbeats -------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                await self._report_network_if_changed()
                reply = await self._api.send_heartbeat(
                    uptime_seconds(), collect_metrics()
                )
            except Exception as exc:
                await self._wait_after_failure("heartbeat.send", exc, backoff)
                continue

            self._note_server_reachable()
            backoff.reset()
            self._log.debug("heartbeat.sent", pending_commands=reply.pending_commands)
            if reply.pending_commands:
                self._poll_now.set()
            await self._sleep_until_next_heartbeat()

    async def _sleep_until_next_heartbeat(self) -> None:
        # A changed interval takes effect at once rather than after the
        # old, possibly much longer, wait.
        self._heartbeat_interval_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._heartbeat_interval_changed.wait(), self._heartbeat_interval
            )

    def _current_network(self) -> NetworkInfo:
        return collect_network(
            self._config.eth0_interface,
            self._config.wlan0_interface,
            self._config.service_port,
        )

    async def _report_network(self) -> None:
        network = self._current_network()
        addresses = {
            "eth0": network.eth0,
            "wlan0": network.wlan0,
            "service_port": network.service_port,
        }

        try:
            await self._api.report_network(network)
        except RequestRejected as exc:
            # Sending the same addresses again would be refused again; wait
            # for them to change instead of holding up the heartbeats.
            self._log.error("network.rejected", error=exc.message, **addresses)
        else:
            self._log.info("network.reported", **addresses)
        self._reported_network = network

    async def _report_network_if_changed(self) -> None:
        if self._current_network() != self._reported_network:
            await self._report_network()

    # -- commands ---------------------------------------------------------

    async def _poll_loop(self) -> None:
        backoff = self._new_backoff()
        while True:
            self._poll_now.clear()
            try:
                await self._flush_outbox()
                commands = await self._api.poll_commands()
            except Exception as exc:
                await self._wait_after_failure("commands.poll", exc, backoff)
                continue

            self._note_server_reachable()
            backoff.reset()
            for command in commands:
                await self._handle_safely(command)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._poll_now.wait(), self._config.poll_interval
                )

    async def _handle_safely(self, command: PolledCommand) -> None:
        # These commands are already marked sent on the server: one that
        # breaks must not keep the rest of the batch from running.
        try:
            await self._handle(command)
        except Unauthorized as exc:
            raise self._revoked(exc) from None
        except Exception:
            self._log.exception(
                "command.error", command_id=command.id, command=command.command
            )

    async def _handle(self, command: PolledCommand) -> None:
        command_log = self._log.bind(command_id=command.id, command=command.command)
        if self._was_handled(command.id):
            # Seen before (a redelivery, or a restart before the ack got
            # through): never run it twice, just make sure the ack goes out.
            command_log.warning("command.duplicate")
            return

        # On disk before anything else: a crash from here on leaves a marker
        # that the next start turns into a `failed` ack, and a log reader
        # who sees "command.received" knows the marker is there.
        self._outbox.begin(command.id)
        command_log.info("command.received")
        started = time.monotonic()
        try:
            outcome = await self._registry.dispatch(command.command, command.payload)
        except asyncio.CancelledError:
            self._outbox.put(
                PendingAck(
                    command_id=command.id,
                    command=command.command,
                    status="failed",
                    result={"error": INTERRUPTED_BY_STOP},
                    finished_at=utc_now(),
                )
            )
            command_log.warning("command.interrupted")
            raise
        outcome = _json_safe(outcome)
        ack = PendingAck(
            command_id=command.id,
            command=command.command,
            status=outcome.status,
            result=outcome.result,
            finished_at=utc_now(),
        )
        self._outbox.put(ack)

        command_log.info(
            "command.executed",
            status=ack.status,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        if ack.status == "failed":
            self._emit_event(
                "error" if outcome.is_crash else "warn",
                "command.failed",
                {
                    "command_id": command.id,
                    "command": command.command,
                    "error": _error_of(ack.result),
                },
            )

        try:
            await self._deliver(ack)
        except Unauthorized:
            raise
        except ApiError as exc:
            # The ack is safe in the outbox; the next flush sends it.
            command_log.warning("command.ack_deferred", error=exc.message)

    def _was_handled(self, command_id: str) -> bool:
        return (
            command_id in self._recently_acked
            or self._outbox.contains(command_id)
            or self._outbox.is_inflight(command_id)
        )

    async def _flush_outbox(self) -> None:
        """Send the stored acks, oldest first, until one cannot go through.

        A server that does not answer at all is raised, as there is no point
        in polling it. An error answer is logged and left for the next flush:
        polling goes on meanwhile, so one ack the server keeps failing on does
        not hold up new commands.
        """
        pending = self._outbox.pending()
        for sent, ack in enumerate(pending):
            try:
                await self._deliver(ack)
            except Unauthorized:
                raise
            except ApiError as exc:
                if isinstance(exc, ServerUnavailable) and exc.status_code is None:
                    raise
                self._log.warning(
                    "outbox.flush_deferred",
                    unsent_acks=len(pending) - sent,
                    error=exc.message,
                )
                return

    async def _deliver(self, ack: PendingAck, *, may_shrink: bool = True) -> None:
        ack_log = self._log.bind(command_id=ack.command_id, command=ack.command)
        try:
            await self._api.acknowledge(ack.command_id, ack.status, ack.result)
        except Conflict as exc:
            # The server already holds a different final state for the
            # command; ours can never replace it.
            ack_log.warning(
                "command.ack_conflict", status=ack.status, error=exc.message
            )
            self._outbox.remove(ack.command_id)
        except RequestRejected as exc:
            if may_shrink and exc.status_code in (413, 422):
                # The result itself was refused (too big, or not storable).
                # A short failure still gives the command a final state.
                ack_log.warning("command.result_refused", error=exc.message)
                shrunk = replace(
                    ack,
                    status="failed",
                    result={"error": f"{RESULT_REFUSED}: {exc.message}"},
                )
                self._outbox.put(shrunk)
                await self._deliver(shrunk, may_shrink=False)
                return
            ack_log.error(
                "command.ack_rejected",
                status=ack.status,
                status_code=exc.status_code,
                error=exc.message,
            )
            self._outbox.reject(ack.command_id)
        else:
            self._outbox.remove(ack.command_id)
            ack_log.info(
                "command.acknowledged",
                status=ack.status,
                latency_seconds=round((utc_now() - ack.finished_at).total_seconds(), 3),
            )
        self._remember_acked(ack.command_id)

    def _remember_acked(self, command_id: str) -> None:
        self._recently_acked[command_id] = None
        self._recently_acked.move_to_end(command_id)
        while len(self._recently_acked) > REMEMBERED_ACKS:
            self._recently_acked.popitem(last=False)

    # -- events -----------------------------------------------------------

    def _emit_event(
        self, level: EventLevel, message: str, data: dict[str, Any] | None = None
    ) -> None:
        if self._events.full():
            dropped = self._events.get_nowait()
            self._log.warning("event.dropped", message=dropped.message)
        self._events.put_nowait(_Event(level, message, data))

    async def _event_loop(self) -> None:
        backoff = self._new_backoff()
        while True:
            event = await self._events.get()
            # Kept until the server has it. A stop cancels this loop, but not a
            # send under way (shielded): `_shutdown` waits for that send and
            # sends the event again only if it failed, so no event is lost and
            # none is stored twice.
            self._event_in_flight = event
            while True:
                self._event_send = asyncio.ensure_future(
                    self._api.record_event(event.level, event.message, event.data)
                )
                try:
                    await asyncio.shield(self._event_send)
                except RequestRejected as exc:
                    self._log.error(
                        "event.rejected", message=event.message, error=exc.message
                    )
                except Exception as exc:
                    await self._wait_after_failure("event.send", exc, backoff)
                    continue
                else:
                    self._note_server_reachable()
                self._event_in_flight = None
                backoff.reset()
                break

    async def _finish_interrupted_send(self) -> None:
        """Wait for the event send a stop interrupted; forget the event if it got
        through, so `_shutdown` sends it again only when it did not."""
        send = self._event_send
        if self._event_in_flight is None or send is None:
            return
        try:
            await send
        except Exception:
            return
        self._event_in_flight = None

    # -- failures, retries and stopping -----------------------------------

    def _new_backoff(self) -> Backoff:
        return Backoff(self._backoff_base_seconds, self._config.backoff_max)

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat ``call`` until the server takes it; a 4xx is raised at once."""
        backoff = self._new_backoff()
        while True:
            try:
                result = await call()
            except (Unauthorized, RequestRejected):
                raise
            except Exception as exc:
                await self._wait_after_failure(operation, exc, backoff)
                continue
            self._note_server_reachable()
            return result

    async def _wait_after_failure(
        self, operation: str, error: Exception, backoff: Backoff
    ) -> None:
        """Log the failure and sleep before the retry; a 401 ends the agent."""
        if isinstance(error, Unauthorized):
            raise self._revoked(error)
        retry_after = (
            error.retry_after_seconds if isinstance(error, ServerUnavailable) else None
        )
        delay = backoff.next_delay(retry_after or 0.0)

        if isinstance(error, ServerUnavailable):
            self._server_unreachable = True
            self._log.warning(
                "server.unreachable",
                operation=operation,
                error=error.message,
                attempt=backoff.attempt,
                retry_in_seconds=round(delay, 3),
            )
        elif isinstance(error, ApiError):
            self._log.error(
                "server.request_failed",
                operation=operation,
                error=error.message,
                status_code=error.status_code,
                retry_in_seconds=round(delay, 3),
            )
        else:
            self._log.exception(
                "agent.error", operation=operation, retry_in_seconds=round(delay, 3)
            )
        await asyncio.sleep(delay)

    def _note_server_reachable(self) -> None:
        if self._server_unreachable:
            self._server_unreachable = False
            self._log.info("server.reachable")

    def _revoked(self, error: Unauthorized) -> AgentFatal:
        client_id = self._credentials.client_id if self._credentials else "{id}"
        self._log.error("agent.token_rejected", error=error.message)
        return AgentFatal(
            TOKEN_REJECTED.format(
                state_dir=self._config.state_dir, client_id=client_id
            ),
            ExitCode.NEEDS_OPERATOR,
        )

    async def _shutdown(self) -> None:
        """Best effort, bounded in time: flush acks and say goodbye."""
        if self._credentials is None:
            log.info("agent.stopped", registered=False)
            return

        with contextlib.suppress(ApiError, TimeoutError):
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                await self._flush_outbox()
                await self._finish_interrupted_send()
                unsent = [self._event_in_flight] if self._event_in_flight else []
                while not self._events.empty():
                    unsent.append(self._events.get_nowait())
                for event in unsent:
                    await self._api.record_event(event.level, event.message, event.data)

        sent = False
        with contextlib.suppress(ApiError, TimeoutError):
            async with asyncio.timeout(SHUTDOWN_EVENT_SECONDS):
                await self._api.record_event(
                    "info", "agent.stopped", self._agent_facts()
                )
                sent = True
        self._log.info(
            "agent.stopped",
            stopped_event_sent=sent,
            unsent_acks=len(self._outbox.pending()),
        )

    def _agent_facts(self) -> dict[str, Any]:
        return {"version": __version__, "commands": self._registry.names()}


async def _run_until_first_failure(*loops: Awaitable[None]) -> None:
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if (error := task.exception()) is not None:
            raise error


def _json_safe(outcome: Outcome) -> Outcome:
    """The outcome, or a failure if its result cannot be stored and sent as JSON."""
    try:
        json.dumps(outcome.result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return Outcome(
            "failed", {"error": f"result is not valid JSON: {exc}"}, is_crash=True
        )
    return outcome


def _error_of(result: Any) -> str | None:
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        return str(result["error"])
    return None


async def run_agent(
    config: AgentConfig,
    stop: asyncio.Event,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ExitCode:
    agent = Agent(config, transport=transport)
    return await agent.run(stop)
