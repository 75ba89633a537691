"""Both commands turn bad settings and unusable databases into one-line messages."""

import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli.test_masterctl import cli_env
from tests.fixtures.server import bin_path, free_port

SUPPORTED = "use sqlite:///PATH or postgresql://USER@HOST:PORT/NAME"


def run(
    program: str,
    workdir: Path,
    *args: str,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    database_url = database_url or f"sqlite:///{workdir / 'master.db'}"
    return subprocess.run(
        [bin_path(program), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**cli_env(database_url), **(env or {})},
        cwd=workdir,
        timeout=60,
    )


# (program, arguments): each reads the settings before doing anything else.
PROGRAMS = [("master-server", ()), ("masterctl", ("migrate",))]


@pytest.mark.parametrize(("program", "args"), PROGRAMS)
@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"MASTER_DATABASE_URL": "garbage"},
            f"error: MASTER_DATABASE_URL: not a database URL; {SUPPORTED}\n",
        ),
        (
            {"MASTER_DATABASE_URL": "mysql://u@h/db"},
            f"error: MASTER_DATABASE_URL: unsupported database 'mysql'; {SUPPORTED}\n",
        ),
        *(
            (
                {"MASTER_DATABASE_URL": url},
                "error: MASTER_DATABASE_URL: an in-memory SQLite database cannot "
                "be shared by the server's processes; name a file, such as "
                "sqlite:///./master.db\n",
            )
            for url in [
                "sqlite://",
                "sqlite:///:memory:",
                "sqlite:///file::memory:?cache=shared",
                "sqlite:///fleet.db?mode=memory",
            ]
        ),
        (
            {"MASTER_PORT": "abc"},
            "error: MASTER_PORT: Input should be a valid integer, "
            "unable to parse string as an integer\n",
        ),
        (
            {"MASTER_PORT": "99999"},
            "error: MASTER_PORT: Input should be less than or equal to 65535\n",
        ),
        (
            {"MASTER_LOG_LEVEL": "loud"},
            "error: MASTER_LOG_LEVEL: Input should be "
            "'debug', 'info', 'warning', 'error' or 'critical'\n",
        ),
        (
            {"MASTER_SESSION_TTL": "-5"},
            "error: MASTER_SESSION_TTL: Input should be greater than or equal to 60\n",
        ),
        (
            {"MASTER_HEARTBEAT_TIMEOUT": "100000000000"},
            "error: MASTER_HEARTBEAT_TIMEOUT: Input should be less than or equal "
            "to 315360000\n",
        ),
        (
            {"MASTER_PORT": "0", "MASTER_WORKERS": "0"},
            "error: MASTER_PORT: Input should be greater than or equal to 1\n"
            "error: MASTER_WORKERS: Input should be greater than or equal to 1\n",
        ),
    ],
)
def test_bad_settings_are_named_one_line_each_and_exit_1(
    tmp_path: Path,
    program: str,
    args: tuple[str, ...],
    variables: dict[str, str],
    message: str,
) -> None:
    result = run(program, tmp_path, *args, env=variables)

    assert result.returncode == 1
    assert result.stderr == message
    assert result.stdout == ""
    assert not (tmp_path / "master.db").exists()


@pytest.mark.parametrize("option", ["--workers", "--port"])
def test_master_server_refuses_an_out_of_range_option_as_a_usage_error(
    tmp_path: Path, option: str
) -> None:
    result = run("master-server", tmp_path, option, "0")

    assert result.returncode == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "master.db").exists()


def unusable_database(kind: str, tmp_path: Path) -> tuple[str, str]:
    """A database URL that cannot be used, and the reason the message gives."""
    if kind == "nothing listening":
        return f"postgresql://postgres@127.0.0.1:{free_port()}/master", ""
    if kind == "no such database":
        name = f"missing_{uuid.uuid4().hex[:12]}"
        return (
            f"postgresql://postgres@127.0.0.1:5432/{name}",
            f'database "{name}" does not exist',
        )
    missing = tmp_path / "missing"
    return f"sqlite:///{missing / 'master.db'}", f"no directory {missing}"


@pytest.mark.parametrize(("program", "args"), PROGRAMS)
@pytest.mark.parametrize(
    "kind", ["nothing listening", "no such database", "missing directory"]
)
def test_an_unusable_database_is_one_line_on_stderr_and_exit_1(
    tmp_path: Path, program: str, args: tuple[str, ...], kind: str
) -> None:
    database_url, reason = unusable_database(kind, tmp_path)

    result = run(program, tmp_path, *args, database_url=database_url)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot use the database: {reason}")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("program", "args"), PROGRAMS)
def test_a_database_migrated_by_a_newer_version_is_one_line_and_left_alone(
    tmp_path: Path, program: str, args: tuple[str, ...]
) -> None:
    database = tmp_path / "master.db"
    assert run("masterctl", tmp_path, "migrate").returncode == 0
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")

    result = run(program, tmp_path, *args)

    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot migrate the database: the database is at schema revision "
        "'9999', which this version of master_server does not know: a newer "
        "version migrated it. Run that version, or restore a backup taken before "
        "it ran\n"
    )
    with sqlite3.connect(database) as connection:
        assert connection.execute(
            "SELECT version_num FROM alembic_version"
        ).fetchall() == [("9999",)]
