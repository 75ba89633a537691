"""`masterctl` run as operators run it: a real process, scripted or at a terminal."""

import os
import pty
import select
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select as sql_select
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from master_server.core.db import create_engine
from master_server.core.migrations import alembic_config
from master_server.core.security import PasswordHashing
from master_server.models import User
from tests.fixtures.database import make_settings
from tests.fixtures.server import bin_path, free_port

PASSWORD = "correct-horse-battery"


def cli_env(database_url: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("MASTER_")
    }
    return {
        **env,
        "MASTER_DATABASE_URL": database_url,
        "MASTER_ARGON2_TIME_COST": "1",
        "MASTER_ARGON2_MEMORY_COST": "1024",
        "MASTER_ARGON2_PARALLELISM": "1",
    }


def masterctl(
    database_url: str, workdir: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_path("masterctl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(database_url),
        cwd=workdir,
        timeout=60,
    )


def bootstrap(
    database_url: str, workdir: Path, username: str, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    return masterctl(
        database_url,
        workdir,
        "bootstrap-admin",
        "--username",
        username,
        "--password-stdin",
        stdin=f"{password}\n",
    )


@pytest.fixture
async def cli_engine(server_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the CLI's own (fresh) database, to look at what it did."""
    engine = create_engine(make_settings(server_database_url))
    yield engine
    await engine.dispose()


async def stored_users(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sql_select(User.username, User.role, User.password_hash).order_by(
                User.created_at
            )
        )
        return [(row.username, row.role, row.password_hash) for row in rows]


def password_matches(password_hash: str, password: str, database_url: str) -> bool:
    return PasswordHashing(make_settings(database_url)).verify(password_hash, password)


# bootstrap-admin, scripted


async def test_bootstrap_admin_creates_an_admin_from_stdin(
    server_database_url: str, tmp_path: Path, cli_engine: AsyncEngine
) -> None:
    first = bootstrap(server_database_url, tmp_path, "Admin")
    second = bootstrap(server_database_url, tmp_path, "root", "root-password")

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == "admin 'Admin' created\n"
    assert first.stderr == ""
    [admin, root] = await stored_users(cli_engine)
    assert admin[:2] == ("Admin", "admin")
    assert root[:2] == ("root", "admin")
    assert password_matches(admin[2], PASSWORD, server_database_url)
    assert password_matches(root[2], "root-password", server_database_url)


async def test_bootstrap_admin_refuses_an_existing_username_in_any_case(
    server_database_url: str, tmp_path: Path, cli_engine: AsyncEngine
) -> None:
    bootstrap(server_database_url, tmp_path, "admin")

    for taken in ("ADMIN", "Admin"):
        result = bootstrap(server_database_url, tmp_path, taken, "another-password")
        assert result.returncode == 1
        assert result.stderr == f"error: user {taken!r} already exists\n"
        assert result.stdout == ""
    [(_, _, password_hash)] = await stored_users(cli_engine)
    assert password_matches(password_hash, PASSWORD, server_database_url)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("p" * 7, "error: password: String should have at least 8 characters"),
        ("p" * 1025, "error: password: String should have at most 1024 characters"),
    ],
)
def test_bootstrap_admin_refuses_a_bad_password_with_a_message(
    tmp_path: Path, password: str, message: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'master.db'}"

    result = bootstrap(database_url, tmp_path, "admin", password)

    assert result.returncode == 1
    assert result.stderr == f"{message}\n"
    assert result.stdout == ""
    assert not (tmp_path / "master.db").exists()


def test_bootstrap_admin_refuses_a_bad_username_with_a_message(tmp_path: Path) -> None:
    result = bootstrap(f"sqlite:///{tmp_path / 'master.db'}", tmp_path, "no spaces")

    assert result.returncode == 1
    assert result.stderr.startswith("error: username: ")


async def test_bootstrap_admin_keeps_the_password_exactly_but_the_line_end(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'master.db'}"
    password = "  spaces around and inside  "

    result = masterctl(
        database_url,
        tmp_path,
        "bootstrap-admin",
        "--username",
        "admin",
        "--password-stdin",
        stdin=f"{password}\r\nignored second line\n",
    )

    assert result.returncode == 0, result.stderr
    engine = create_engine(make_settings(database_url))
    try:
        [(_, _, password_hash)] = await stored_users(engine)
    finally:
        await engine.dispose()
    assert password_matches(password_hash, password, database_url)


def test_bootstrap_admin_on_an_unreachable_database_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/master"

    result = bootstrap(url, tmp_path, "admin")

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot use the database: ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


# bootstrap-admin at a terminal


class Terminal:
    """A process on a pseudo-terminal, driven like a person at a keyboard."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.fd, child = pty.openpty()
        # A new session has no controlling terminal, so getpass reads the pty
        # on stdin (echo off) and never the terminal pytest was started from.
        self.process = subprocess.Popen(
            args,
            stdin=child,
            stdout=child,
            stderr=child,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(child)
        self.output = b""
        self.seen = 0  # output up to here has been matched by expect()

    def expect(self, text_: str, timeout: float = 30.0) -> None:
        """Wait for `text_` to appear after what the last expect() matched."""
        deadline = time.monotonic() + timeout
        while (found := self.output.find(text_.encode(), self.seen)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text_!r} in {self.output!r}")
            if not self._read(remaining):
                raise AssertionError(f"EOF before {text_!r} in {self.output!r}")
        self.seen = found + len(text_)

    def type(self, line: str) -> None:
        os.write(self.fd, f"{line}\n".encode())

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self._read(max(deadline - time.monotonic(), 0.01)):
            pass
        os.close(self.fd)
        return self.process.wait(timeout=timeout)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed its end
            return False
        self.output += chunk
        return bool(chunk)


def test_bootstrap_admin_at_a_terminal_asks_twice_without_echo(
    tmp_path: Path,
) -> None:
    terminal = Terminal(
        [bin_path("masterctl"), "bootstrap-admin"],
        cli_env(f"sqlite:///{tmp_path / 'master.db'}"),
        tmp_path,
    )

    terminal.expect("Username: ")
    terminal.type("operator")
    terminal.expect("Password: ")
    terminal.type(PASSWORD)
    terminal.expect("Repeat for confirmation: ")
    terminal.type("a-different-password")
    terminal.expect("do not match")
    terminal.expect("Password: ")
    terminal.type(PASSWORD)
    terminal.expect("Repeat for confirmation: ")
    terminal.type(PASSWORD)
    status = terminal.wait()

    assert status == 0, terminal.output
    assert b"admin 'operator' created" in terminal.output
    assert b"operator" in terminal.output  # the username is echoed...
    assert PASSWORD.encode() not in terminal.output  # ...the passwords are not
    assert b"a-different-password" not in terminal.output


# migrate


def head_revision(database_url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None
    return head


async def test_migrate_brings_an_empty_database_to_head_and_says_so(
    server_database_url: str, tmp_path: Path, cli_engine: AsyncEngine
) -> None:
    first = masterctl(server_database_url, tmp_path, "migrate")
    again = masterctl(server_database_url, tmp_path, "migrate")

    script = ScriptDirectory.from_config(alembic_config(server_database_url))
    steps = [
        f"applied {revision.revision}: {revision.doc}\n"
        for revision in reversed(list(script.walk_revisions()))
    ]
    assert first.stdout == "".join(steps) + "database is up to date\n"
    assert again.stdout == "database is up to date\n"
    for result in (first, again):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    async with cli_engine.connect() as connection:
        version = await connection.scalar(
            text("SELECT version_num FROM alembic_version")
        )
    assert version == head_revision(server_database_url)


async def test_downgrade_goes_back_to_a_revision_and_migrate_returns_to_head(
    server_database_url: str, tmp_path: Path, cli_engine: AsyncEngine
) -> None:
    assert masterctl(server_database_url, tmp_path, "migrate").returncode == 0
    head = head_revision(server_database_url)
    script = ScriptDirectory.from_config(alembic_config(server_database_url))
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)

    back = masterctl(server_database_url, tmp_path, "downgrade", previous)
    async with cli_engine.connect() as connection:
        at = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    forward = masterctl(server_database_url, tmp_path, "migrate")

    assert back.returncode == 0, back.stderr
    assert back.stdout == f"undid {head}\ndatabase is at {previous}\n"
    assert at == previous
    assert forward.returncode == 0, forward.stderr
    assert forward.stdout.startswith(f"applied {head}: ")


def test_downgrade_to_an_unknown_revision_says_so_in_one_line(
    server_database_url: str, tmp_path: Path
) -> None:
    assert masterctl(server_database_url, tmp_path, "migrate").returncode == 0

    result = masterctl(server_database_url, tmp_path, "downgrade", "0999")

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot migrate the database: ")
    assert result.stderr.count("\n") == 1


def test_migrate_into_a_missing_directory_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'master.db'}"

    result = masterctl(url, tmp_path, "migrate")

    assert result.returncode == 1
    assert result.stderr == (
        f"error: cannot use the database: no directory {tmp_path / 'missing'}\n"
    )


def test_migrate_on_an_unreachable_database_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/master"

    result = masterctl(url, tmp_path, "migrate")

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot use the database: ")
    assert len(result.stderr.splitlines()) == 1


def test_masterctl_without_a_command_shows_its_help(tmp_path: Path) -> None:
    result = masterctl("sqlite:///unused.db", tmp_path)

    assert "bootstrap-admin" in result.stdout
    assert "migrate" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--username", "admin"],
            "error: no terminal to ask for the password; "
            "pipe it in with --password-stdin\n",
        ),
        (
            ["--password-stdin"],
            "error: no terminal to ask for the username; pass --username\n",
        ),
    ],
)
def test_bootstrap_admin_without_a_terminal_says_what_to_pass_instead(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [bin_path("masterctl"), "bootstrap-admin", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(f"sqlite:///{tmp_path / 'master.db'}"),
        cwd=tmp_path,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr == message
    assert result.stdout == ""
    assert not (tmp_path / "master.db").exists()
