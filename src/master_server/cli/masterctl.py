"""`masterctl`: the operator's command line."""

import asyncio
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from master_server.cli.common import database_errors_as_messages, fail, load_settings
from master_server.core.config import get_settings
from master_server.core.db import Database, create_engine
from master_server.core.logging import configure_logging
from master_server.core.migrations import downgrade as downgrade_to
from master_server.core.migrations import upgrade
from master_server.core.security import PasswordHashing
from master_server.models import UserRole
from master_server.users import service as user_service
from master_server.users.errors import UsernameTaken
from master_server.users.schemas import UserCreate

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
def migrate() -> None:
    """Apply every pending database migration and exit."""
    settings = load_settings()
    configure_logging(settings, for_cli=True)

    with database_errors_as_messages(settings.database_url):
        applied = upgrade(settings.database_url)
    for step in applied:
        typer.echo(f"applied {step}")
    typer.echo("database is up to date")


@app.command()
def downgrade(
    revision: Annotated[
        str,
        typer.Argument(
            help="The revision to go back to, as `migrate` names them (0003, ...)."
        ),
    ],
) -> None:
    """Undo database migrations back to REVISION, to run an older version again.

    Stop every server first. What a later migration added goes with it.
    """
    settings = load_settings()
    configure_logging(settings, for_cli=True)

    with database_errors_as_messages(settings.database_url):
        undone = downgrade_to(settings.database_url, revision)
    for step in undone:
        typer.echo(f"undid {step}")
    typer.echo(f"database is at {revision}")


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
    settings = load_settings()
    configure_logging(settings, for_cli=True)

    if not sys.stdin.isatty():
        if username is None:
            raise fail("no terminal to ask for the username; pass --username")
        if not password_stdin:
            raise fail(
                "no terminal to ask for the password; pipe it in with --password-stdin"
            )
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
