"""Alembic environment: runs migrations over the app's async engine."""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from master_server.core.config import get_settings
from master_server.core.db import create_engine
from master_server.models import Base

config = context.config
target_metadata = Base.metadata

# Replicas started together all migrate on start. On PostgreSQL they take
# turns behind this advisory lock, held until the migrating transaction ends,
# so the second finds the schema already done instead of failing on it.
# (SQLite has a single server process.)
MIGRATION_LOCK = 0x6D61737465725F31  # "master_1"


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Set by core.migrations.upgrade to report the steps it applied.
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_engine(get_settings(), url=url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `masterctl migrate`")

asyncio.run(_run_online())
