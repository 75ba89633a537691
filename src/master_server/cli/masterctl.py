"""`masterctl`: the operator's command line."""

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url

from master_server.core.config import get_settings
from master_server.core.db import Database, create_engine
from master_server.core.logging import configure_logging
from master_server.core.migrations import upgrade
from master_server.core.security import PasswordHashing
from master_server.models import UserRole
from master_server.users import service as user_service
from master_server.users.errors import UsernameTaken
from master_server.users.schemas import UserCreate

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


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


@app.command()
def migrate() -> None:
    """Apply every pending database migration and exit."""
    settings = get_settings()
    configure_logging(settings, for_cli=True)

    with database_errors_as_messages(settings.database_url):
        upgrade(settings.database_url)
    typer.echo("database is up to date")


@app.command("bootstrap-admin")
def bootstrap_admin(
    username: Annotated[
        str | None, typer.Option(help="Username; asked for when left out.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Create an admin user (the first one, or another)."""
    settings = get_settings()
    configure_logging(settings, for_cli=True)

    if username is None:
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        new_user = UserCreate(username=username, password=password, role=UserRole.ADMIN)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            typer.echo(f"error: {field}: {error['msg']}", err=True)
        raise typer.Exit(1) from None

    with database_errors_as_messages(settings.database_url):
        upgrade(settings.database_url)
        try:
            asyncio.run(_create_admin(new_user))
        except UsernameTaken:
            raise fail(f"user {username!r} already exists") from None
    typer.echo(f"admin {username!r} created")


async def _create_admin(new_user: UserCreate) -> None:
    settings = get_settings()
    database = Database(create_engine(settings))
    try:
        async with database.session() as db:
            await user_service.create_user(
                db,
                PasswordHashing(settings),
                username=new_user.username,
                password=new_user.password,
                role=new_user.role,
            )
    finally:
        await database.dispose()
