"""Apply the Alembic migrations shipped inside the package.

Alembic's env.py runs its own event loop, so these functions are synchronous;
call them before the server's loop starts or from a worker thread.
"""

import re
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util import CommandError

MIGRATIONS = "master_server:migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.set_main_option(
        "file_template",
        "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s",
    )
    return config


class MigrationError(Exception):
    """The database's schema cannot be brought to this version's."""


def upgrade(database_url: str, revision: str = "head") -> list[str]:
    """Migrate to `revision`; returns the steps applied, oldest first, if any.

    A database stamped with a revision this version does not ship (migrated by
    a newer version) is a MigrationError that says so.
    """
    config = alembic_config(database_url)
    applied: list[str] = []

    def record(*, step: Any, **_: Any) -> None:
        doc = step.up_revision.doc if step.up_revision is not None else ""
        applied.append(f"{step.up_revision_id}: {doc}".removesuffix(": "))

    # env.py hands this to Alembic's `on_version_apply`.
    config.attributes["on_version_apply"] = record
    try:
        command.upgrade(config, revision)
    except CommandError as exc:
        unknown = re.search(r"Can't locate revision identified by '([^']*)'", str(exc))
        if unknown is None:
            raise MigrationError(str(exc)) from exc
        raise MigrationError(
            f"the database is at schema revision {unknown.group(1)!r}, which this "
            "version of master_server does not know: a newer version migrated it. "
            "Run that version, or restore a backup taken before it ran"
        ) from exc
    return applied


def downgrade(database_url: str, revision: str = "base") -> list[str]:
    """Undo migrations back to `revision`; returns the steps undone, newest first.

    A revision this version does not ship, or one newer than the database's,
    is a MigrationError.
    """
    config = alembic_config(database_url)
    undone: list[str] = []

    def record(*, step: Any, **_: Any) -> None:
        undone.append(step.up_revision_id)

    config.attributes["on_version_apply"] = record
    try:
        command.downgrade(config, revision)
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    return undone
