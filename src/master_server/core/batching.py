"""Group commit: many requests' writes share one transaction.

Committing costs a round trip and, on PostgreSQL, a WAL flush; doing it once
per heartbeat caps the server far below what HTTP alone can carry. A
`BatchWriter` is one task per process that takes the items requests submit,
gathers all that are waiting (up to `max_batch_size`), and hands them to a
write function that stores them all in one transaction.
Only once that transaction has committed is each request answered, so a
success always means durable.

The write function returns one outcome per item, in order: a result, or a
`MasterServerError` for an item refused on its own (a bad token, say) while
the rest of the batch is stored. When the write itself fails, nothing in the
batch was stored, and every request in it gets a `WriteFailed` (503), which
devices retry.

Under load the batching needs no timer: while one batch is being written the
next one fills up, so batches grow with the load and the number of commits
stays bounded by the database's speed, not by the request rate. Before it
takes a batch, the writer lets the event loop go round six times
(`settle_turns`): requests whose bytes have already arrived are parsed and
join this batch instead of waiting a whole round trip for the next one. A
turn with nothing else ready costs a few microseconds. In bench/run, two
turns instead of none made a heartbeat cheaper (CPU per heartbeat 390 → 363
µs on PostgreSQL, 524 → 432 µs on SQLite); six instead of two took the
PostgreSQL batches from 16 to 26 heartbeats and heartbeats/s up by 6 %, and
SQLite's by 20 %. More turns than six made the batches no bigger. A fixed
wait for company (`max_delay_seconds`) is available, but measured only to
lower throughput, so the writers here do not use it.

On SQLite a batch is best written by one function on the driver's own thread
(`run_in_sqlite_thread`): aiosqlite hands every call to that thread and back,
and through SQLAlchemy a statement costs three or four such trips, each one
waiting its turn on an event loop that is busy parsing requests.

On PostgreSQL a batch is one statement, run on the asyncpg connection behind
an engine's connection (`driver_connection`). Its SQL is written out by hand
anyway; going through SQLAlchemy's execute added a fixed ~200 µs of CPU a
batch in bench/run, more than a dozen rows cost asyncpg to encode.
"""

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import asyncpg
import structlog
from sqlalchemy import Dialect, Uuid
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from master_server.core.errors import MasterServerError, ServiceUnavailable
from master_server.models.base import UTCDateTime

log = structlog.get_logger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# One outcome per item, in the order the items were given.
WriteBatch = Callable[
    [Sequence[ItemT]], Awaitable[Sequence[ResultT | MasterServerError]]
]


class WriteFailed(ServiceUnavailable):
    code = "write_failed"
    message = "the database did not store this write; nothing was stored, retry later"


class WriterOverloaded(ServiceUnavailable):
    code = "overloaded"
    message = "too many writes are waiting to be stored, retry later"


class WriterStopped(ServiceUnavailable):
    code = "shutting_down"
    message = "the server is shutting down, retry later"


@dataclass(slots=True)
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]


@dataclass(slots=True)
class BatchStats:
    """What a writer has done since it started; for tests and the benchmark."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int, *, failed: bool) -> None:
        self.batches += 1
        self.items += size
        self.failed_batches += failed
        self.largest_batch = max(self.largest_batch, size)
        if len(self.sizes) < 10_000:
            self.sizes.append(size)


_STOP = object()


class BatchWriter(Generic[ItemT, ResultT]):
    """Writes submitted items in batches, one transaction per batch.

    A batch holds at most `max_batch_size` items. Once it has its first item
    it lets the event loop go round `settle_turns` times, then waits
    `max_delay_seconds` for more (0: it takes only what is queued).
    `concurrency` writer tasks take batches from the one queue; PostgreSQL
    could write several at once, but one was measured to be best. A write
    taking longer than `write_timeout_seconds` fails its batch, and more than
    `max_queue_size` waiting items refuse new ones (503) rather than pile up.

    Use it as an async context manager (or `start()` and `stop()`): stopping
    refuses new items and writes everything already queued before returning.
    """

    def __init__(
        self,
        name: str,
        write: WriteBatch[ItemT, ResultT],
        *,
        max_batch_size: int = 500,
        # No waiting for company by default: a batch takes what is queued when
        # the writer gets to it, which under load is what arrived while the
        # previous batch was written. In bench/run any fixed wait lowered
        # throughput.
        max_delay_seconds: float = 0.0,
        settle_turns: int = 6,
        max_queue_size: int = 20_000,
        write_timeout_seconds: float = 15.0,
        concurrency: int = 1,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_batch_size < 1 or concurrency < 1 or settle_turns < 0:
            raise ValueError(
                "max_batch_size and concurrency must be at least 1, "
                "settle_turns at least 0"
            )
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_seconds = max_delay_seconds
        self.settle_turns = settle_turns
        self.max_queue_size = max_queue_size
        self.write_timeout_seconds = write_timeout_seconds
        self.concurrency = concurrency
        self.stats = BatchStats()
        self._write = write
        self._on_stop = on_stop
        self._queue: asyncio.Queue[_Pending[ItemT, ResultT] | object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._is_stopping = False

    @property
    def queued(self) -> int:
        """How many items wait for a batch."""
        return self._queue.qsize()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        if self._tasks:
            raise RuntimeError(f"batch writer {self.name} is already running")
        self._is_stopping = False
        self._tasks = [
            asyncio.create_task(self._run(), name=f"batch-writer-{self.name}-{n}")
            for n in range(self.concurrency)
        ]
        log.debug("batch.writer.started", writer=self.name)

    async def stop(self) -> None:
        """Refuse new items, write the queued ones, end the tasks, run `on_stop`."""
        if not self._tasks:
            return
        self._is_stopping = True
        for _ in self._tasks:
            self._queue.put_nowait(_STOP)
        try:
            await asyncio.gather(*self._tasks)
        finally:
            self._tasks = []
            self._refuse_queued()
            if self._on_stop is not None:
                await self._on_stop()
        log.debug("batch.writer.stopped", writer=self.name, **_summary(self.stats))

    async def submit(self, item: ItemT) -> ResultT:
        """Queue `item` and wait until its batch has committed.

        Returns the item's result, or raises its own error, or `WriteFailed`
        when the batch could not be stored.
        """
        if not self._tasks or self._is_stopping:
            raise WriterStopped
        if self._queue.qsize() >= self.max_queue_size:
            raise WriterOverloaded

        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
        return await future

    async def _run(self) -> None:
        is_last = False
        while not is_last:
            first = await self._queue.get()
            if first is _STOP:
                break
            batch, is_last = await self._gather(first)
            await self._flush(batch)

    def _refuse_queued(self) -> None:
        # Anything still queued raced with stop(): refuse it rather than leave
        # its request waiting forever.
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if isinstance(leftover, _Pending) and not leftover.future.done():
                leftover.future.set_exception(WriterStopped())

    async def _gather(
        self, first: object
    ) -> tuple[list[_Pending[ItemT, ResultT]], bool]:
        """The batch that starts with `first`, and whether a stop came after it."""
        assert isinstance(first, _Pending)
        batch: list[_Pending[ItemT, ResultT]] = [first]
        for _ in range(self.settle_turns):
            # Let requests already read from their sockets reach the queue.
            await asyncio.sleep(0)
        is_last = self._take_queued(batch)
        if (
            not is_last
            and len(batch) < self.max_batch_size
            and self.max_delay_seconds > 0
        ):
            # Wait a moment for company: fewer commits, for a little latency.
            await asyncio.sleep(self.max_delay_seconds)
            is_last = self._take_queued(batch)
        return batch, is_last

    def _take_queued(self, batch: list[_Pending[ItemT, ResultT]]) -> bool:
        while len(batch) < self.max_batch_size:
            try:
                queued = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if queued is _STOP:
                return True
            assert isinstance(queued, _Pending)
            batch.append(queued)
        return False

    async def _flush(self, batch: list[_Pending[ItemT, ResultT]]) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.write_timeout_seconds):
                outcomes = await self._write([pending.item for pending in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(
                    f"write returned {len(outcomes)} outcomes for {len(batch)} items"
                )
        except Exception as exc:
            self.stats.record(len(batch), failed=True)
            log.error(
                "batch.write.failed",
                writer=self.name,
                size=len(batch),
                error_type=type(exc).__name__,
                error=str(exc)[:500],
            )
            for pending in batch:
                if not pending.future.done():
                    failure = WriteFailed()
                    failure.__cause__ = exc
                    pending.future.set_exception(failure)
            return
        except BaseException:
            # Cancelled mid-write (the loop is going away): whether the
            # transaction committed is unknown, so nobody is told it did.
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(WriterStopped())
            raise

        self.stats.record(len(batch), failed=False)
        log.debug(
            "batch.written",
            writer=self.name,
            size=len(batch),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():  # its request went away meanwhile
                continue
            if isinstance(outcome, MasterServerError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)


def _summary(stats: BatchStats) -> dict[str, int]:
    return {
        "batches": stats.batches,
        "items": stats.items,
        "failed_batches": stats.failed_batches,
        "largest_batch": stats.largest_batch,
    }


T = TypeVar("T")


async def run_in_sqlite_thread(
    conn: AsyncConnection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """Run `work` on the sqlite3 connection behind `conn`, in its own thread.

    One trip to aiosqlite's thread and back for the whole of `work`, however
    many statements it runs; `work` manages its own transaction. `conn` stays
    checked out meanwhile, so nothing else uses the connection.

    aiosqlite has no public call for this; its private `_execute` (pinned in
    pyproject.toml) is the one it uses for its own methods.
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    execute = getattr(driver, "_execute", None)
    if execute is None:
        raise RuntimeError("this aiosqlite version has no Connection._execute")
    result: T = await execute(lambda: work(driver._conn))
    return result


@dataclass(frozen=True, slots=True)
class SqliteCodec:
    """SQLAlchemy's own encodings, for statements run on sqlite3 directly.

    Taken from the column types, so a row written by hand reads back through
    SQLAlchemy exactly like one it wrote (ids as 32 hex digits, times as naive
    UTC text that sorts).
    """

    to_id: Callable[[uuid.UUID], str]
    from_id: Callable[[str], uuid.UUID]
    to_time: Callable[[datetime], str]

    @classmethod
    def of(cls, dialect: Dialect) -> "SqliteCodec":
        id_type: Uuid[uuid.UUID] = Uuid()
        to_id = id_type.bind_processor(dialect)
        from_id = id_type.result_processor(dialect, None)  # type: ignore[no-untyped-call]
        # The time type as the dialect runs it, so a time comes out as the
        # text SQLAlchemy stores, not as a datetime that sqlite3 would format
        # its own way (without the fraction on a whole second).
        to_time = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert to_id and from_id and to_time
        return cls(to_id=to_id, from_id=from_id, to_time=to_time)


# What a PostgreSQL batch runs on: asyncpg's own connection.
PgConnection = asyncpg.Connection


async def driver_connection(conn: AsyncConnection) -> PgConnection:
    """The asyncpg connection behind `conn`.

    `conn` stays checked out meanwhile, so nothing else uses the connection.
    SQLAlchemy begins its transactions on the driver lazily, at its own first
    statement, so statements run here are outside of them: give it an
    AUTOCOMMIT `conn`, and open a transaction on the driver if one is needed.
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise TypeError(f"not an asyncpg connection: {type(driver).__name__}")
    return driver


class HeldConnection:
    """A connection a writer keeps from one batch to the next, in autocommit.

    Taking one from the pool for each batch costs a pre-ping round trip and
    the pool's bookkeeping, more than a batch of one statement. A batch that
    is one statement is also one transaction, so autocommit needs no BEGIN
    or COMMIT. After a failed batch the connection is dropped, in case it is
    the connection that failed, and the next batch opens a new one.

    The connection plans its statements once (`plan_cache_mode`). Left to
    choose, PostgreSQL goes by its estimates: with 100,000 clients it kept
    the one plan, but with 20,000 it planned every batch anew for its
    values, and a batch of 16 heartbeats cost it 800 µs of CPU instead of
    540. A batch's plan does not depend on its values. Having that setting,
    the connection is closed at the end, never handed back to the pool.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: PgConnection | None = None

    async def driver(self) -> PgConnection:
        """The held connection's asyncpg connection, opened if need be.

        One the server has closed meanwhile (a restart, a terminated backend)
        is replaced before the batch is sent, rather than failing it.
        """
        if self._driver is not None and self._driver.is_closed():
            log.info("batch.connection.lost")
            await self.discard()
        if self._driver is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = await driver_connection(self._conn)
            await driver.execute("SET plan_cache_mode = force_generic_plan")
            self._driver = driver
        return self._driver

    async def discard(self) -> None:
        """Close the connection for good; the next batch opens another."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception as exc:  # it is being thrown away anyway
                log.debug(
                    "batch.connection.close_failed", error_type=type(exc).__name__
                )

    async def close(self) -> None:
        await self.discard()


RowT = TypeVar("RowT")
VerdictT = TypeVar("VerdictT")


async def store_batch(
    engine: AsyncEngine,
    rows: Sequence[RowT],
    *,
    postgresql: Callable[[PgConnection, Sequence[RowT]], Awaitable[list[VerdictT]]],
    sqlite: Callable[[sqlite3.Connection, SqliteCodec, Sequence[RowT]], list[VerdictT]],
    held: HeldConnection | None = None,
) -> list[VerdictT]:
    """Run a batch's statements on the engine's database, in a transaction of its own.

    SQLite: `sqlite` runs on the driver's thread and manages its transaction.
    PostgreSQL: `postgresql` runs in autocommit, so it must be one statement,
    on the asyncpg connection of `held` (dropped after a failure) or, without
    it, of a pooled connection.
    """
    if engine.dialect.name == "sqlite":
        codec = SqliteCodec.of(engine.dialect)
        async with engine.connect() as conn:
            return await run_in_sqlite_thread(conn, lambda db: sqlite(db, codec, rows))
    if held is not None:
        try:
            return await postgresql(await held.driver(), rows)
        except Exception:
            await held.discard()
            raise
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await postgresql(await driver_connection(autocommit), rows)
