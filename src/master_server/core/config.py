"""Settings, read once from `MASTER_*` environment variables and a `.env` file.

The flat variable names are the ones `API.md` fixes; in code they are grouped by
concern through the sub-models' field prefixes, not by nesting the variables.
"""

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

ENV_PREFIX = "MASTER_"
# Schemes as written in MASTER_DATABASE_URL; core/db.py swaps in async drivers.
DATABASE_SCHEMES = frozenset(
    {
        "sqlite",
        "sqlite+pysqlite",
        "sqlite+aiosqlite",
        "postgres",
        "postgresql",
        "postgresql+psycopg",
        "postgresql+psycopg2",
        "postgresql+asyncpg",
    }
)
SUPPORTED_DATABASES = "use sqlite:///PATH or postgresql://USER@HOST:PORT/NAME"

# The longest session or heartbeat timeout: far beyond any real one, and far
# enough inside the dates Python and the databases hold that no time computed
# from it overflows.
TEN_YEARS_SECONDS = 10 * 365 * 86_400


def env_var_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    # Database
    database_url: str = "sqlite:///./master.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # None picks for you: one per core on PostgreSQL, always one on SQLite.
    workers: int | None = Field(default=None, ge=1, le=64)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Logging
    log_level: LogLevel = "info"
    log_format: Literal["json", "console"] = "json"

    # Auth
    session_ttl: int = Field(
        default=86_400, ge=60, le=TEN_YEARS_SECONDS, description="seconds"
    )
    otp_issuer: str = "master_server"
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65_536, ge=8, description="KiB")
    argon2_parallelism: int = Field(default=4, ge=1)

    # Fleet
    heartbeat_timeout: int = Field(
        default=90, ge=1, le=TEN_YEARS_SECONDS, description="seconds"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL; {SUPPORTED_DATABASES}") from None
        if url.drivername not in DATABASE_SCHEMES:
            raise ValueError(
                f"unsupported database {url.drivername!r}; {SUPPORTED_DATABASES}"
            )
        if url.get_backend_name() == "sqlite" and (
            url.database in {None, "", ":memory:"}
            or url.query.get("mode") == "memory"
            or str(url.database).startswith("file::memory:")
        ):
            # Each connection and each process would see a database of its
            # own: the migrations, the workers and masterctl never share one.
            raise ValueError(
                "an in-memory SQLite database cannot be shared by the server's "
                "processes; name a file, such as sqlite:///./master.db"
            )
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
