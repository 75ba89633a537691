"""The group-commit writer on its own, with a write function that records."""

import asyncio
from collections.abc import Sequence

import pytest

from master_server.core.batching import (
    BatchWriter,
    WriteFailed,
    WriterOverloaded,
    WriterStopped,
)
from master_server.core.errors import MasterServerError, NotFound


class Recorder:
    """A write function that keeps every batch it was given."""

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_seconds = delay_seconds

    async def __call__(self, items: Sequence[int]) -> list[int | MasterServerError]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_seconds)
        return [item * 10 for item in items]


async def test_items_submitted_within_the_window_share_one_write() -> None:
    recorder = Recorder()

    async with BatchWriter("test", recorder, max_delay_seconds=0.05) as writer:
        first = asyncio.create_task(writer.submit(1))
        await asyncio.sleep(0.01)  # well inside the window
        results = await asyncio.gather(first, writer.submit(2), writer.submit(3))

    assert list(results) == [10, 20, 30]
    assert recorder.batches == [[1, 2, 3]]


async def test_an_item_after_the_window_goes_in_the_next_write() -> None:
    recorder = Recorder()

    async with BatchWriter("test", recorder, max_delay_seconds=0.01) as writer:
        assert await writer.submit(1) == 10
        assert await writer.submit(2) == 20

    assert recorder.batches == [[1], [2]]


async def test_items_arriving_during_a_write_form_the_next_batch() -> None:
    recorder = Recorder(delay_seconds=0.05)

    async with BatchWriter("test", recorder, max_delay_seconds=0) as writer:
        first = asyncio.create_task(writer.submit(1))
        await asyncio.sleep(0.01)  # the first write is under way
        rest = [asyncio.create_task(writer.submit(n)) for n in (2, 3, 4)]
        await asyncio.gather(first, *rest)

    assert recorder.batches == [[1], [2, 3, 4]]


async def submit_a_turn_later(writer: BatchWriter[int, int], item: int) -> int:
    """An item whose request is parsed on the event loop's next turn."""
    await asyncio.sleep(0)
    return await writer.submit(item)


@pytest.mark.parametrize(
    ("settle_turns", "batches"), [(0, [[1], [2, 3]]), (2, [[1, 2, 3]])]
)
async def test_items_a_loop_turn_behind_join_the_batch_when_the_writer_settles(
    settle_turns: int, batches: list[list[int]]
) -> None:
    recorder = Recorder()

    async with BatchWriter("test", recorder, settle_turns=settle_turns) as writer:
        results = await asyncio.gather(
            writer.submit(1),
            submit_a_turn_later(writer, 2),
            submit_a_turn_later(writer, 3),
        )

    assert list(results) == [10, 20, 30]
    assert recorder.batches == batches


async def test_a_batch_never_exceeds_the_maximum_size() -> None:
    recorder = Recorder()

    async with BatchWriter(
        "test", recorder, max_batch_size=10, max_delay_seconds=0.01
    ) as writer:
        results = await asyncio.gather(*(writer.submit(n) for n in range(25)))

    assert results == [n * 10 for n in range(25)]
    assert [len(batch) for batch in recorder.batches] == [10, 10, 5]
    assert [n for batch in recorder.batches for n in batch] == list(range(25))
    assert writer.stats.largest_batch == 10


async def test_a_failed_write_reaches_every_waiter_in_the_batch() -> None:
    cause = RuntimeError("disk on fire")
    calls = 0

    async def broken(items: Sequence[int]) -> list[int | MasterServerError]:
        nonlocal calls
        calls += 1
        raise cause

    async with BatchWriter("test", broken, max_delay_seconds=0.01) as writer:
        results = await asyncio.gather(
            *(writer.submit(n) for n in range(5)), return_exceptions=True
        )

    assert calls == 1
    assert all(isinstance(result, WriteFailed) for result in results)
    assert all(
        isinstance(result, BaseException) and result.__cause__ is cause
        for result in results
    )
    assert len({id(result) for result in results}) == 5  # one error each
    assert writer.stats.failed_batches == 1


async def test_the_writer_keeps_going_after_a_failed_write() -> None:
    attempts = 0

    async def flaky(items: Sequence[int]) -> list[int | MasterServerError]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("once")
        return list(items)

    async with BatchWriter("test", flaky, max_delay_seconds=0) as writer:
        with pytest.raises(WriteFailed):
            await writer.submit(1)
        assert await writer.submit(2) == 2


async def test_an_items_own_error_reaches_only_its_waiter() -> None:
    async def picky(items: Sequence[int]) -> list[int | MasterServerError]:
        return [NotFound() if item == 2 else item for item in items]

    async with BatchWriter("test", picky, max_delay_seconds=0.01) as writer:
        results = await asyncio.gather(
            *(writer.submit(n) for n in (1, 2, 3)), return_exceptions=True
        )

    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], NotFound)


async def test_a_write_with_too_few_outcomes_fails_the_batch() -> None:
    async def short(items: Sequence[int]) -> Sequence[int | MasterServerError]:
        return items[:-1]

    async with BatchWriter("test", short, max_delay_seconds=0.01) as writer:
        results = await asyncio.gather(
            *(writer.submit(n) for n in range(3)), return_exceptions=True
        )

    assert all(isinstance(result, WriteFailed) for result in results)


async def test_a_write_that_hangs_fails_its_batch_after_the_timeout() -> None:
    async def hangs(items: Sequence[int]) -> list[int | MasterServerError]:
        await asyncio.sleep(10)
        return list(items)

    async with BatchWriter(
        "test", hangs, max_delay_seconds=0, write_timeout_seconds=0.05
    ) as writer:
        with pytest.raises(WriteFailed) as failure:
            await writer.submit(1)

    assert isinstance(failure.value.__cause__, TimeoutError)


async def test_stopping_writes_what_is_queued_and_refuses_what_comes_after() -> None:
    recorder = Recorder(delay_seconds=0.02)
    writer = BatchWriter("test", recorder, max_batch_size=2, max_delay_seconds=0)
    writer.start()
    queued = [asyncio.create_task(writer.submit(n)) for n in range(5)]
    await asyncio.sleep(0)

    await writer.stop()

    assert [task.result() for task in queued] == [0, 10, 20, 30, 40]
    with pytest.raises(WriterStopped):
        await writer.submit(9)


async def test_a_writer_that_was_never_started_refuses_items() -> None:
    writer = BatchWriter("test", Recorder())

    with pytest.raises(WriterStopped):
        await writer.submit(1)


async def test_a_full_queue_refuses_new_items_at_once() -> None:
    recorder = Recorder(delay_seconds=0.05)

    async with BatchWriter(
        "test", recorder, max_batch_size=1, max_delay_seconds=0, max_queue_size=2
    ) as writer:
        tasks = [asyncio.create_task(writer.submit(n)) for n in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)

    # The writer had not taken anything yet: two wait, the others are refused.
    assert results[:2] == [0, 10]
    assert all(isinstance(result, WriterOverloaded) for result in results[2:])


async def test_a_waiter_that_gives_up_does_not_disturb_its_batch() -> None:
    recorder = Recorder(delay_seconds=0.05)

    async with BatchWriter("test", recorder, max_delay_seconds=0.01) as writer:
        impatient = asyncio.create_task(writer.submit(1))
        patient = asyncio.create_task(writer.submit(2))
        await asyncio.sleep(0.03)
        impatient.cancel()
        assert await patient == 20

    assert recorder.batches == [[1, 2]]


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchWriter("test", Recorder(), max_batch_size=0)


async def test_two_writer_tasks_write_two_batches_at_once() -> None:
    recorder = Recorder(delay_seconds=0.05)

    async with BatchWriter("test", recorder, max_batch_size=2, concurrency=2) as writer:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(writer.submit(n) for n in range(4)))
        elapsed = asyncio.get_running_loop().time() - started

    assert results == [0, 10, 20, 30]
    assert [len(batch) for batch in recorder.batches] == [2, 2]
    assert sorted(n for batch in recorder.batches for n in batch) == [0, 1, 2, 3]
    assert elapsed < 0.09  # side by side, not one after the other


async def test_stopping_several_writer_tasks_writes_everything_queued() -> None:
    recorder = Recorder(delay_seconds=0.01)
    writer = BatchWriter("test", recorder, max_batch_size=3, concurrency=3)
    writer.start()
    queued = [asyncio.create_task(writer.submit(n)) for n in range(20)]
    await asyncio.sleep(0)

    await writer.stop()

    assert [task.result() for task in queued] == [n * 10 for n in range(20)]


async def test_on_stop_runs_after_the_last_batch() -> None:
    events: list[str] = []

    async def write(items: Sequence[int]) -> Sequence[int | MasterServerError]:
        events.append("write")
        return items

    async def on_stop() -> None:
        events.append("stopped")

    async with BatchWriter("test", write, on_stop=on_stop) as writer:
        await writer.submit(1)

    assert events == ["write", "stopped"]
