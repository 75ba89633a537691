"""The load harness behind `bench/run`; see `bench/run --help` and bench/README.md.

It starts a real `master-server` on a throwaway SQLite file or PostgreSQL
database, seeds registered clients straight into the database, and measures,
in one run: a baseline endpoint that does no database work, heartbeats and
event ingest at full speed (wrk, rotating through every device's token), the
round trip of a command to a device that polls as the agent does, paging
through `GET /clients`, and the server's peak memory. The last line it prints
is `bench: heartbeat_ratio=... heartbeats_per_s=... p99_ms=...`.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from sqlalchemy import func, insert, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from master_agent.config import AgentConfig
from master_server.cli.server import worker_count
from master_server.core.config import Settings
from master_server.core.db import create_engine
from master_server.core.migrations import upgrade
from master_server.core.security import TokenKind, hash_token, new_token
from master_server.models import Client, Event, Heartbeat
from master_server.models.base import utcnow

BENCH_DIR = Path(__file__).resolve().parent
BIN_DIR = Path(sys.executable).parent
LUA_SCRIPT = BENCH_DIR / "telemetry.lua"
ADMIN_USERNAME = "bench-admin"
ADMIN_PASSWORD = "bench-admin-password"
# The command round trip's commands come from a plain user, as an operator's
# would, checked against the devices assigned to them.
USER_USERNAME = "bench-operator"
USER_PASSWORD = "bench-operator-password"
SEED_CHUNK = 5_000
# The agent's own default: the command round trip is measured against it.
AGENT_POLL_INTERVAL_SECONDS: float = AgentConfig.model_fields["poll_interval"].default


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- arguments


@dataclass
class Plan:
    db: str
    clients: int
    duration_seconds: int
    slices: int
    warmup_seconds: int
    connections: int
    threads: int
    workers: int | None
    commands: int
    command_devices: int
    pages: int
    log_level: str
    postgres_url: str
    keep: bool


def parse_args(argv: list[str]) -> Plan:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Measure heartbeats, events, commands and GET /clients "
        "on a real master-server.",
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--clients", type=int, help="registered clients to seed (default 100000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller numbers: 10000 clients, 6 s per measurement; about a minute",
    )
    parser.add_argument(
        "--duration",
        type=int,
        help="seconds of wrk per measurement, over all its slices (20; quick 6)",
    )
    parser.add_argument(
        "--slices",
        type=int,
        help="baseline and heartbeats take turns this many times (4; quick 2)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=128,
        help="wrk -c (128; bench/README.md says why not fewer)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    parser.add_argument(
        "--workers", type=int, help="server workers (default: as master-server picks)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="MASTER_LOG_LEVEL for the server (warning: no line per request)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "MASTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="server that may create and drop a throwaway database",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and the server log"
    )
    args = parser.parse_args(argv)

    quick = args.quick
    clients = args.clients or (10_000 if quick else 100_000)
    if clients < 100:
        parser.error("--clients must be at least 100")
    duration = args.duration or (6 if quick else 20)
    slices = args.slices or (2 if quick else 4)
    if slices < 1 or duration < slices:
        parser.error("--slices must be at least 1 and at most --duration")
    return Plan(
        db=args.db,
        clients=clients,
        duration_seconds=duration,
        slices=slices,
        warmup_seconds=2 if quick else 3,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        commands=30 if quick else 100,
        command_devices=10 if quick else 20,
        pages=100 if quick else 300,
        log_level=args.log_level,
        postgres_url=args.postgres_url,
        keep=args.keep,
    )


# ---------------------------------------------------------------- database


@contextmanager
def throwaway_database(plan: Plan, workdir: Path) -> Iterator[str]:
    if plan.db == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return

    name = f"master_bench_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_url(plan.postgres_url).set(drivername="postgresql")
    dsn = admin_dsn.render_as_string(hide_password=False)

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_dsn.set(database=name).render_as_string(hide_password=False)
    finally:
        if plan.keep:
            say(f"kept database {name}")
        else:
            asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_for(database_url: str, workers: int | None = None) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=database_url, workers=workers
    )


async def seed_clients(database_url: str, count: int, devices_file: Path) -> float:
    """Insert `count` registered clients in multi-row batches; returns seconds."""
    started = time.perf_counter()
    engine = create_engine(settings_for(database_url))
    now = utcnow()
    try:
        with devices_file.open("w") as out:
            for start in range(0, count, SEED_CHUNK):
                rows = []
                lines = []
                for n in range(start, min(start + SEED_CHUNK, count)):
                    client_id = uuid.uuid4()
                    token = new_token(TokenKind.CLIENT)
                    rows.append(
                        {
                            "id": client_id,
                            "name": f"bench-{n:06d}",
                            "description": "",
                            "token_hash": hash_token(token),
                            "registered_at": now,
                            "created_at": now,
                        }
                    )
                    lines.append(f"{client_id} {token}\n")
                async with engine.begin() as conn:
                    await conn.execute(insert(Client), rows)
                out.writelines(lines)
        if engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of a bulk load (this
            # machine's PostgreSQL runs with autovacuum off): statistics, and
            # a visibility map that lets GET /clients page from the index.
            async with engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text("VACUUM (ANALYZE)"))
                await write_out(autocommit)
        else:
            os.sync()
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def write_out(conn: AsyncConnection) -> None:
    """Put the seed on disk before anything is measured.

    Otherwise the kernel writes the seed's dirty pages back during the first
    measurements, and every commit's WAL flush waits behind that: batches
    stalled for 100 ms and more at a time. CHECKPOINT needs a superuser or
    pg_checkpoint; without it only the operating system's own writes are
    flushed.
    """
    try:
        await conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:
        say(f"bench: no CHECKPOINT after seeding ({exc.orig})")
    os.sync()


async def count_rows(database_url: str) -> dict[str, int]:
    engine = create_engine(settings_for(database_url))
    try:
        async with engine.connect() as conn:
            return {
                model.__tablename__: int(
                    await conn.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Heartbeat, Event)
            }
    finally:
        await engine.dispose()


async def database_version(database_url: str) -> str:
    engine = create_engine(settings_for(database_url))
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return f"SQLite {await conn.scalar(text('select sqlite_version()'))}"
            version = str(await conn.scalar(text("show server_version")))
            return f"PostgreSQL {version}"
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    peak_rss_bytes: int = 0
    _sampling: bool = True

    def sample_memory(self) -> None:
        """Keep the peak RSS of the server and all its workers, summed."""
        parent = psutil.Process(self.process.pid)
        while self._sampling:
            try:
                processes = [parent, *parent.children(recursive=True)]
                total = sum(p.memory_info().rss for p in processes if p.is_running())
                self.peak_rss_bytes = max(self.peak_rss_bytes, total)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_server(plan: Plan, database_url: str, workdir: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "MASTER_DATABASE_URL": database_url,
        "MASTER_HOST": "127.0.0.1",
        "MASTER_PORT": str(port),
        "MASTER_LOG_LEVEL": plan.log_level,
        "MASTER_ARGON2_TIME_COST": "1",
        "MASTER_ARGON2_MEMORY_COST": "1024",
        "MASTER_ARGON2_PARALLELISM": "1",
    }
    if plan.workers:
        env["MASTER_WORKERS"] = str(plan.workers)
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN_DIR / "master-server")],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    sampler = threading.Thread(target=server.sample_memory, daemon=True)
    try:
        wait_healthy(server)
        sampler.start()
        yield server
    finally:
        server.stop()


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"master-server exited:\n{server.log_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("master-server did not become healthy within 60 s")


def bootstrap_admin(server: Server, workdir: Path) -> None:
    subprocess.run(
        [
            str(BIN_DIR / "masterctl"),
            "bootstrap-admin",
            "--username",
            ADMIN_USERNAME,
            "--password-stdin",
        ],
        input=f"{ADMIN_PASSWORD}\n".encode(),
        cwd=workdir,
        env=server.env,
        check=True,
        capture_output=True,
    )


def login(server: Server, username: str, password: str) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/auth/login",
        json={"username": username, "password": password},
        timeout=30,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def command_devices(plan: Plan, devices_file: Path) -> list[tuple[str, dict[str, str]]]:
    """The first devices of the list, with their token headers."""
    devices = []
    with devices_file.open() as lines:
        for line in lines:
            client_id, token = line.split()
            devices.append((client_id, {"Authorization": f"Bearer {token}"}))
            if len(devices) == plan.command_devices:
                break
    return devices


def operator_for(
    server: Server, admin: dict[str, str], client_ids: list[str]
) -> dict[str, str]:
    """A plain user, assigned `client_ids` by the admin, logged in."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        created = http.post(
            "/users",
            json={"username": USER_USERNAME, "password": USER_PASSWORD, "role": "user"},
            headers=admin,
        )
        created.raise_for_status()
        for client_id in client_ids:
            http.post(
                f"/clients/{client_id}/assign",
                json={"user_id": created.json()["id"]},
                headers=admin,
            ).raise_for_status()
    return login(server, USER_USERNAME, USER_PASSWORD)


# ---------------------------------------------------------------- measurements


@dataclass
class Row:
    name: str
    rate_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    note: str = ""
    # CPU time per request of the server's processes and of the database
    # server's (None: not measured; SQLite runs inside the server).
    server_us: float | None = None
    database_us: float | None = None
    # The share of the machine's CPU time left idle meanwhile: near 0 when
    # the run is CPU-bound.
    idle_percent: float | None = None


def run_wrk(
    plan: Plan, server: Server, mode: str, devices_file: Path, seconds: int
) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{plan.threads}",
        f"-c{plan.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        server.url,
        "--",
        mode,
        str(devices_file),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in output.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise SystemExit(f"wrk gave no result:\n{output.stdout}\n{output.stderr}")


class CpuMeter:
    """CPU seconds used so far by the server's processes and the database's.

    The database's are every process named `postgres*` on the machine, so
    another PostgreSQL client running meanwhile would be counted too.
    """

    def __init__(self, server: Server, *, postgresql: bool) -> None:
        parent = psutil.Process(server.process.pid)
        self._server = [parent, *parent.children(recursive=True)]
        self._postgresql = postgresql

    @staticmethod
    def _seconds(processes: list[psutil.Process]) -> float:
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a connection ended meanwhile
                continue
            total += times.user + times.system
        return total

    def read(self) -> tuple[float, float | None, "MachineTimes"]:
        database = None
        if self._postgresql:
            # Looked up each time: backends come and go with connections.
            database = self._seconds(
                [
                    process
                    for process in psutil.process_iter(["name"])
                    if (process.info["name"] or "").startswith("postgres")
                ]
            )
        return self._seconds(self._server), database, MachineTimes.now()


@dataclass(frozen=True)
class MachineTimes:
    """The machine's CPU seconds so far, all cores: idle, and in all."""

    idle_s: float
    total_s: float

    @classmethod
    def now(cls) -> "MachineTimes":
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        return cls(idle_s=idle, total_s=sum(times))


@dataclass
class Slice:
    """One wrk run of one mode."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float
    database_cpu_s: float | None
    idle_s: float
    machine_s: float
    # (percent, milliseconds): the latency under which that share of the
    # requests was answered, from 1 % to 100 %.
    quantiles: list[tuple[float, float]]

    def share_within(self, latency_ms: float) -> float:
        """The share of this run's requests known to take at most `latency_ms`."""
        return max(
            (percent / 100 for percent, ms in self.quantiles if ms <= latency_ms),
            default=0.0,
        )


def merged_percentile(runs: list[Slice], percent: float) -> float:
    """The `percent` latency (ms) of all the runs' requests taken together.

    Found from each run's quantiles; it errs on the high side, by at most the
    gap between two of a run's quantiles.
    """
    total = sum(run.requests for run in runs)
    wanted = percent / 100 * total
    candidates = sorted({ms for run in runs for _, ms in run.quantiles})
    for latency_ms in candidates:
        if sum(run.requests * run.share_within(latency_ms) for run in runs) >= wanted:
            return latency_ms
    return candidates[-1]


def run_slice(
    plan: Plan,
    server: Server,
    meter: CpuMeter,
    mode: str,
    devices_file: Path,
    seconds: int,
) -> Slice:
    server_before, database_before, machine_before = meter.read()
    result = run_wrk(plan, server, mode, devices_file, seconds)
    server_after, database_after, machine_after = meter.read()
    return Slice(
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=sum(
            result[key]
            for key in (
                "status_errors",
                "connect_errors",
                "read_errors",
                "write_errors",
                "timeouts",
            )
        ),
        server_cpu_s=server_after - server_before,
        database_cpu_s=None
        if database_before is None or database_after is None
        else database_after - database_before,
        idle_s=machine_after.idle_s - machine_before.idle_s,
        machine_s=machine_after.total_s - machine_before.total_s,
        quantiles=[(percent, us / 1000) for percent, us in result["quantiles"]],
    )


STORED_IN = {"heartbeat": "heartbeats", "event": "events"}


@dataclass
class Turns:
    """What `measure_in_turns` found: a row per mode, and its slices."""

    rows: dict[str, Row]
    slices: dict[str, list[Slice]]


def measure_in_turns(
    plan: Plan,
    server: Server,
    modes: list[tuple[str, str]],
    devices_file: Path,
    database_url: str,
) -> Turns:
    """Each (mode, name) for `plan.duration_seconds`, the modes taking turns.

    The time is cut into `plan.slices` slices and the modes alternate slice by
    slice, so a change in the machine's speed during the run (a neighbour's
    burst, say) falls on all of them alike instead of on whichever ran then.
    A row adds its slices up: requests per second over all of them, and
    latencies over all their requests together.
    """
    meter = CpuMeter(server, postgresql=not database_url.startswith("sqlite"))
    for mode, _ in modes:
        run_wrk(plan, server, mode, devices_file, plan.warmup_seconds)
    seconds = plan.duration_seconds // plan.slices
    before = asyncio.run(count_rows(database_url))
    slices: dict[str, list[Slice]] = {mode: [] for mode, _ in modes}
    for _ in range(plan.slices):
        for mode, _ in modes:
            slices[mode].append(
                run_slice(plan, server, meter, mode, devices_file, seconds)
            )
    after = asyncio.run(count_rows(database_url))

    rows = {}
    for mode, name in modes:
        runs = slices[mode]
        requests = sum(run.requests for run in runs)
        note = f"{requests} answered"
        if mode in STORED_IN:
            table = STORED_IN[mode]
            note += f", {after[table] - before[table]} stored"
        if plan.slices > 1:
            note += f", {plan.slices} slices of {seconds} s"
        database_cpu = [run.database_cpu_s for run in runs]
        rows[mode] = Row(
            name=name,
            rate_per_s=requests / sum(run.seconds for run in runs),
            p50_ms=statistics.median(run.p50_ms for run in runs),
            p99_ms=max(run.p99_ms for run in runs),
            errors=sum(run.errors for run in runs),
            note=note,
            server_us=1e6 * sum(run.server_cpu_s for run in runs) / requests,
            database_us=None
            if None in database_cpu
            else 1e6 * sum(cpu or 0.0 for cpu in database_cpu) / requests,
            idle_percent=idle_percent(runs),
        )
    return Turns(rows, slices)


def idle_percent(runs: list[Slice]) -> float:
    """The share of the machine's CPU time nobody used, over all the runs."""
    return 100 * sum(run.idle_s for run in runs) / sum(run.machine_s for run in runs)


def slice_ratios(numerator: list[Slice], denominator: list[Slice]) -> list[float]:
    return [
        (top.requests / top.seconds) / (bottom.requests / bottom.seconds)
        for top, bottom in zip(numerator, denominator, strict=True)
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass
class RoundTrips:
    created: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    errors: int = 0


async def measure_command_round_trip(
    plan: Plan,
    server: Server,
    operator: dict[str, str],
    devices: list[tuple[str, dict[str, str]]],
) -> tuple[Row, Row]:
    """Commands from a user to devices that poll every AGENT_POLL_INTERVAL_SECONDS.

    Each device polls on its own phase, the way many agents would; commands
    are created by `operator` (a plain user the devices are assigned to) at a
    steady pace among them. Latencies are measured from the creating
    request's answer to the poll that delivers the command, and to the
    answer of the device's ack.
    """

    trips = RoundTrips()
    interval = AGENT_POLL_INTERVAL_SECONDS
    create_window = max(2.0, plan.commands * 0.1)
    deadline = time.monotonic() + create_window + 2 * interval + 5

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

        async def device_loop(client_id: str, headers: dict[str, str]) -> None:
            await asyncio.sleep(random.uniform(0, interval))
            while time.monotonic() < deadline:
                response = await http.get(
                    f"/clients/{client_id}/commands", headers=headers
                )
                polled = time.monotonic()
                if response.status_code != 200:
                    trips.errors += 1
                for command in response.json() if response.status_code == 200 else []:
                    trips.received[command["id"]] = polled
                    ack = await http.post(
                        f"/clients/{client_id}/commands/{command['id']}/ack",
                        json={"status": "acked", "result": {"ok": True}},
                        headers=headers,
                    )
                    if ack.status_code != 200:
                        trips.errors += 1
                    trips.acked[command["id"]] = time.monotonic()
                if len(trips.acked) >= plan.commands:
                    return
                await asyncio.sleep(interval)

        async def creator() -> None:
            for n in range(plan.commands):
                client_id, _ = devices[n % len(devices)]
                response = await http.post(
                    f"/clients/{client_id}/commands",
                    json={"command": "ping", "payload": {"n": n}},
                    headers=operator,
                )
                if response.status_code != 201:
                    trips.errors += 1
                    continue
                trips.created[response.json()["id"]] = time.monotonic()
                await asyncio.sleep(create_window / plan.commands)

        await asyncio.gather(
            creator(), *(device_loop(client_id, h) for client_id, h in devices)
        )

    to_receipt = [
        (trips.received[i] - created) * 1000
        for i, created in trips.created.items()
        if i in trips.received
    ]
    to_ack = [
        (trips.acked[i] - created) * 1000
        for i, created in trips.created.items()
        if i in trips.acked
    ]
    missing = len(trips.created) - len(to_ack)
    note = f"{len(trips.created)} commands by a user, poll every {interval:g} s"
    rows = []
    for name, values in (
        ("command create→receipt", to_receipt),
        ("command create→ack", to_ack),
    ):
        rows.append(
            Row(
                name=name,
                p50_ms=statistics.median(values) if values else None,
                p99_ms=percentile(values, 0.99) if values else None,
                errors=trips.errors + missing,
                note=note,
            )
        )
    return rows[0], rows[1]


async def measure_client_pages(
    plan: Plan, server: Server, admin: dict[str, str]
) -> Row:
    """GET /clients, 100 a page, at offsets spread over the whole fleet."""
    limit = 100
    offsets = [
        round(n * (plan.clients - limit) / max(1, plan.pages - 1))
        for n in range(plan.pages)
    ]
    random.shuffle(offsets)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for offset in offsets[:5]:  # warm up
            await http.get(
                "/clients", params={"limit": limit, "offset": offset}, headers=admin
            )
        for offset in offsets:
            started = time.perf_counter()
            response = await http.get(
                "/clients", params={"limit": limit, "offset": offset}, headers=admin
            )
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or len(response.json()) != limit:
                errors += 1
    return Row(
        name="GET /clients (admin)",
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 0.99),
        errors=errors,
        note=f"{plan.pages} pages of {limit}, one at a time",
    )


# ---------------------------------------------------------------- report


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory_gib:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[Row]) -> None:
    header = (
        "measurement",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "cpu µs/req",
        "idle %",
    )
    say("{:<26} {:>10} {:>9} {:>9} {:>7}  {:<16} {:>6}  note".format(*header))
    say("-" * 118)
    for row in rows:
        if row.server_us is None:
            cpu = "-"
        elif row.database_us is None:
            cpu = f"{row.server_us:,.0f}"
        else:
            cpu = f"{row.server_us:,.0f} + {row.database_us:,.0f} db"
        say(
            f"{row.name:<26} {fmt(row.rate_per_s, 0):>10} {fmt(row.p50_ms, 2):>9} "
            f"{fmt(row.p99_ms, 2):>9} {row.errors:>7}  {cpu:<16} "
            f"{fmt(row.idle_percent, 0):>6}  {row.note}"
        )


def main(argv: list[str]) -> int:
    plan = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="master-bench-"))
    devices_file = workdir / "devices.txt"
    try:
        with throwaway_database(plan, workdir) as database_url:
            upgrade(database_url)
            seconds = asyncio.run(
                seed_clients(database_url, plan.clients, devices_file)
            )
            version = asyncio.run(database_version(database_url))
            say(f"bench: {machine()}")
            say(
                f"bench: {version}, {plan.clients:,} clients seeded in "
                f"{seconds:.1f} s; wrk -t{plan.threads} -c{plan.connections}, "
                f"{plan.duration_seconds} s per measurement; "
                f"server log level {plan.log_level}"
            )

            with running_server(plan, database_url, workdir) as server:
                bootstrap_admin(server, workdir)
                admin = login(server, ADMIN_USERNAME, ADMIN_PASSWORD)
                workers = worker_count(settings_for(database_url, plan.workers))
                say(f"bench: master-server with {workers} worker process(es)")

                # The baseline and the heartbeats take turns, so that the
                # ratio compares them under the same conditions.
                turns = measure_in_turns(
                    plan,
                    server,
                    [
                        ("baseline", "baseline (no database)"),
                        ("heartbeat", "heartbeats"),
                    ],
                    devices_file,
                    database_url,
                )
                baseline, heartbeats = turns.rows["baseline"], turns.rows["heartbeat"]
                events = measure_in_turns(
                    plan, server, [("event", "events")], devices_file, database_url
                ).rows["event"]
                devices = command_devices(plan, devices_file)
                operator = operator_for(server, admin, [i for i, _ in devices])
                receipt, ack = asyncio.run(
                    measure_command_round_trip(plan, server, operator, devices)
                )
                pages = asyncio.run(measure_client_pages(plan, server, admin))
                peak_rss = server.peak_rss_bytes

            rows = [baseline, heartbeats, events, receipt, ack, pages]
            say()
            print_table(rows)
            say()
            say(f"server peak RSS (all processes): {peak_rss / 2**20:,.0f} MiB")
            say(f"total time: {time.monotonic() - started:.0f} s")
            assert baseline.rate_per_s and heartbeats.rate_per_s and heartbeats.p99_ms
            ratio = heartbeats.rate_per_s / baseline.rate_per_s
            per_slice = slice_ratios(
                turns.slices["heartbeat"], turns.slices["baseline"]
            )
            say(
                "heartbeats ÷ baseline, slice by slice: "
                + ", ".join(f"{r:.2f}" for r in per_slice)
            )
            say(
                f"bench: heartbeat_ratio={ratio:.2f} "
                f"heartbeats_per_s={heartbeats.rate_per_s:.0f} "
                f"p99_ms={heartbeats.p99_ms:.1f}"
            )
    finally:
        if plan.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
