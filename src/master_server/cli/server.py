"""`master-server`: migrate the database, then serve the API with uvicorn."""

import os
from typing import Annotated

import structlog
import typer
import uvicorn

from master_server.cli.common import database_errors_as_messages, load_settings
from master_server.core.config import Settings, get_settings
from master_server.core.logging import configure_logging
from master_server.core.migrations import upgrade

log = structlog.get_logger("master_server.cli.server")

cli = typer.Typer(add_completion=False, help=__doc__)


def worker_count(settings: Settings) -> int:
    """SQLite allows one writer, so one process; PostgreSQL gets one per core."""
    if settings.is_sqlite:
        return 1
    return settings.workers or os.cpu_count() or 1


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [MASTER_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Bind port [MASTER_PORT]")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes [MASTER_WORKERS]"),
    ] = None,
) -> None:
    """Run the HTTP server, migrating the database first."""
    overrides = {
        key: value
        for key, value in {"host": host, "port": port, "workers": workers}.items()
        if value is not None
    }
    if overrides:
        # Workers are fresh processes that read the environment, not this object.
        for key, value in overrides.items():
            os.environ[f"MASTER_{key.upper()}"] = str(value)
        get_settings.cache_clear()
    settings = load_settings()
    configure_logging(settings)

    log.info("database.migrating")
    with database_errors_as_messages(settings.database_url):
        upgrade(settings.database_url)

    count = worker_count(settings)
    log.info("server.listening", host=settings.host, port=settings.port, workers=count)
    uvicorn.run(
        "master_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=count,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def main() -> None:
    cli()
