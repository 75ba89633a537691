import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from master_agent.state import (
    AgentState,
    Outbox,
    PendingAck,
    StateError,
    StateStore,
    write_file_atomically,
)

STATE = AgentState(
    client_id="7d3e2c55-6d7a-4c1e-9a0e-2b8f5a6c1d00",
    token="secret-token",
    server="http://master.test",
    registered_at=datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_ack(command_id: str, minutes: int = 0) -> PendingAck:
    return PendingAck(
        command_id=command_id,
        command="echo",
        status="acked",
        result={"hello": "world"},
        finished_at=datetime(2026, 12, 3, 12, minutes, tzinfo=UTC),
    )


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")

    store.save(STATE)

    assert store.load() == STATE


def test_a_fresh_state_directory_has_no_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state").load() is None


@pytest.mark.usefixtures("permissive_umask")
def test_state_file_is_0600_and_its_directory_0700(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")

    store.save(STATE)

    assert mode_of(store.path) == 0o600
    assert mode_of(store.state_dir) == 0o700


def test_loading_tightens_a_state_file_left_readable_by_others(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state")
    store.save(STATE)
    store.path.chmod(0o644)

    store.load()

    assert mode_of(store.path) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def broken_replace(source: str, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)

    with pytest.raises(OSError):
        write_file_atomically(path, b"new")

    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_a_damaged_state_file_is_reported_not_guessed_at(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.save(STATE)
    store.path.write_text('{"client_id": ')

    with pytest.raises(StateError, match="damaged"):
        store.load()


def test_the_token_never_shows_in_the_state_repr() -> None:
    assert "secret-token" not in repr(STATE)


def test_a_second_agent_cannot_take_a_locked_state_directory(tmp_path: Path) -> None:
    first = StateStore(tmp_path / "state")
    second = StateStore(tmp_path / "state")
    first.lock()
    try:
        with pytest.raises(StateError, match="already running"):
            second.lock()
    finally:
        first.unlock()

    second.lock()
    second.unlock()


def test_a_stored_ack_survives_a_new_outbox_instance(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()

    outbox.put(make_ack("cmd-1"))

    reopened = Outbox(tmp_path)
    reopened.open()
    assert reopened.pending() == [make_ack("cmd-1")]
    assert reopened.contains("cmd-1")


@pytest.mark.usefixtures("permissive_umask")
def test_stored_acks_are_private_files(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()

    outbox.put(make_ack("cmd-1"))

    assert mode_of(outbox.directory / "cmd-1.json") == 0o600
    assert mode_of(outbox.directory) == 0o700


def test_pending_acks_come_oldest_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.put(make_ack("b-late", minutes=5))
    outbox.put(make_ack("a-early", minutes=1))

    assert [ack.command_id for ack in outbox.pending()] == ["a-early", "b-late"]


def test_storing_the_same_ack_twice_keeps_one_copy(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()

    outbox.put(make_ack("cmd-1"))
    outbox.put(make_ack("cmd-1"))

    assert len(outbox.pending()) == 1


def test_a_removed_ack_is_gone(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.put(make_ack("cmd-1"))

    outbox.remove("cmd-1")

    assert outbox.pending() == []
    assert not outbox.contains("cmd-1")


def test_a_rejected_ack_is_kept_aside_and_not_resent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.put(make_ack("cmd-1"))

    outbox.reject("cmd-1")

    assert outbox.pending() == []
    assert (outbox.rejected_directory / "cmd-1.json").exists()


def test_a_damaged_ack_file_is_set_aside(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.put(make_ack("good"))
    (outbox.directory / "bad.json").write_text("{not json")

    assert [ack.command_id for ack in outbox.pending()] == ["good"]
    assert (outbox.rejected_directory / "bad.json.damaged").exists()


def test_opening_drops_temporaries_left_by_a_crash(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    leftover = outbox.directory / ".cmd-1.json.abc.tmp"
    leftover.write_text("half")

    Outbox(tmp_path).open()

    assert not leftover.exists()


def test_an_ack_with_an_unsafe_command_id_is_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()

    with pytest.raises(ValueError):
        outbox.put(make_ack("../../etc/passwd"))


def test_storing_an_ack_ends_its_inflight_mark(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.begin("cmd-1")
    assert outbox.is_inflight("cmd-1")

    outbox.put(make_ack("cmd-1"))

    assert not outbox.is_inflight("cmd-1")


def test_a_command_interrupted_by_a_crash_becomes_a_failed_ack(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.begin("cmd-crashed")

    recovered = Outbox(tmp_path)
    recovered.open()
    ids = recovered.recover_interrupted("interrupted")

    assert ids == ["cmd-crashed"]
    [ack] = recovered.pending()
    assert ack.command_id == "cmd-crashed"
    assert ack.status == "failed"
    assert ack.result == {"error": "interrupted"}
    assert datetime.now(UTC) - ack.finished_at < timedelta(minutes=1)
    assert not recovered.is_inflight("cmd-crashed")


def test_recovery_keeps_an_ack_written_just_before_a_crash(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    outbox.put(make_ack("cmd-1"))
    outbox.begin("cmd-1")  # as if the crash hit between the two steps

    assert outbox.recover_interrupted("interrupted") == []
    assert outbox.pending() == [make_ack("cmd-1")]
    assert not outbox.is_inflight("cmd-1")
