"""What `masterctl` and `master-server` share: one-line errors instead of tracebacks."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url

from master_server.core.config import Settings, env_var_name, get_settings
from master_server.core.migrations import MigrationError


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; raise the returned exit (status 1)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def load_settings() -> Settings:
    """The settings, or one line per bad `MASTER_*` variable and exit 1."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = env_var_name(str(error["loc"][0])) if error["loc"] else "settings"
            message = error["msg"].removeprefix("Value error, ")
            typer.echo(f"error: {name}: {message}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def database_errors_as_messages(database_url: str) -> Iterator[None]:
    """A database that cannot be reached is one line on stderr, not a traceback."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in {
        None,
        "",
        ":memory:",
    }:
        # SQLite creates the file, not the directory it goes in.
        directory = Path(str(url.database)).parent
        if not directory.is_dir():
            raise fail(f"cannot use the database: no directory {directory}")
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        reason = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        raise fail(f"cannot use the database: {reason}") from None
    except MigrationError as exc:
        raise fail(f"cannot migrate the database: {exc}") from None
