"""Agent configuration.

Every setting comes from, in order of precedence: a command-line flag, a
``MASTER_AGENT_<NAME>`` environment variable, the TOML config file (``--config``
or ``MASTER_AGENT_CONFIG``), then the default. The file uses the same names as
the flags, with ``_`` or ``-``::

    server = "https://master.example.com"
    state_dir = "/var/lib/master-agent"
    heartbeat_interval = 30
    exec_allow = ["uptime", "df -h"]
"""

import json
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

ENV_PREFIX = "MASTER_AGENT_"
CONFIG_ENV_VAR = f"{ENV_PREFIX}CONFIG"

LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(Exception):
    """The configuration cannot be used; the message tells the operator why."""


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where the server lives, e.g. "https://master.example.com" (no trailing path
    # is needed; a path prefix such as "https://host/master" is kept).
    server: str
    # One-time key from POST /clients; only needed until the first registration.
    provision_key: SecretStr | None = None
    # Holds state.json (client id and token) and the ack outbox.
    state_dir: Path
    heartbeat_interval: float = Field(default=30.0, ge=0.1, le=86400)  # seconds
    poll_interval: float = Field(default=5.0, ge=0.1, le=3600)  # seconds
    service_port: int | None = Field(default=None, ge=1, le=65535)
    # Exact command lines the `exec` command may run; empty turns `exec` off.
    exec_allow: tuple[str, ...] = ()
    request_timeout: float = Field(default=10.0, gt=0, le=300)  # seconds
    backoff_max: float = Field(default=60.0, ge=1, le=3600)  # seconds, retry cap
    log_level: LogLevel = "info"
    # Host interfaces reported as the client's `eth0` and `wlan0` addresses.
    eth0_interface: str = Field(default="eth0", min_length=1)
    wlan0_interface: str = Field(default="wlan0", min_length=1)

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        try:
            url = httpx.URL(value.strip())
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return str(url).rstrip("/")

    @field_validator("provision_key")
    @classmethod
    def _non_empty_provision_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty variable never gets here (it counts as unset); an empty flag
        # or file entry is a mistake, not a key the server should refuse.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("provision key is empty")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        # Messages to the operator name the directory; make it unambiguous.
        return value.expanduser().absolute()

    @field_validator("exec_allow")
    @classmethod
    def _check_exec_allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for command in value:
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise ValueError(f"cannot parse {command!r}: {exc}") from None
            if not argv:
                raise ValueError("an allowed command cannot be empty")
        return tuple(dict.fromkeys(value))


FIELD_NAMES: tuple[str, ...] = tuple(AgentConfig.model_fields)


def env_var_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def load_config(
    flags: Mapping[str, object | None],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> AgentConfig:
    """Merge flags, environment, config file and defaults, in that precedence.

    A flag whose value is None (or an empty list) counts as not given. The config
    file is ``config_file`` if given, else ``MASTER_AGENT_CONFIG``.
    """
    unknown = set(flags) - set(FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")

    if config_file is None and environ.get(CONFIG_ENV_VAR):
        config_file = Path(environ[CONFIG_ENV_VAR])

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        for name, value in _read_config_file(config_file).items():
            values[name] = value
            sources[name] = f"config file {config_file}"
    for name, value in _read_environment(environ).items():
        values[name] = value
        sources[name] = env_var_name(name)
    for name, value in flags.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        values[name] = value
        sources[name] = "--" + name.replace("_", "-")

    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    values = {key.replace("-", "_"): value for key, value in document.items()}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown settings: {', '.join(unknown)}"
        )
    return values


def _read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in FIELD_NAMES:
        raw = environ.get(env_var_name(name), "")
        # An empty variable counts as unset, as docker-compose leaves them.
        if raw == "":
            continue
        values[name] = _parse_list(name, raw) if name == "exec_allow" else raw
    return values


def _parse_list(name: str, raw: str) -> list[str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{env_var_name(name)} must be a JSON array of strings, "
            """for example '["uptime", "df -h"]'"""
        )
    return value


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "configuration"
        if error["type"] == "missing":
            problems.append(
                f"{name} is required: pass --{name.replace('_', '-')}, "
                f"set {env_var_name(name)} or put {name} in the config file"
            )
            continue
        source = sources.get(name, "default")
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name} (from {source}): {message}")
    return "; ".join(problems)
