"""`master-agent`: the program each client device runs.

Exit codes: 0 after a clean stop (SIGTERM or SIGINT), 1 on an unexpected
error, 2 when the operator must act (bad configuration or state, a provision
key or token the server refused).
"""

import asyncio
import os
import signal
from pathlib import Path
from typing import Annotated

import structlog
import typer

from master_agent.config import AgentConfig, ConfigError, env_var_name, load_config
from master_agent.logging import configure_logging
from master_agent.runner import AgentFatal, ExitCode, run_agent

app = typer.Typer(
    name="master-agent",
    help="The master_server client agent: registers this device, sends heartbeats "
    "and events, and runs the commands it is sent.",
    no_args_is_help=True,
    add_completion=False,
)


def _help(text: str, field_name: str, default: str | None = None) -> str:
    # Parentheses, not brackets: Typer's rich help would take brackets as markup.
    where = f"env {env_var_name(field_name)}"
    if default is not None:
        where = f"default {default}; {where}"
    return f"{text} ({where})"


@app.callback()
def main() -> None:
    """The master_server client agent."""


@app.command()
def run(
    server: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help=_help("Server base URL, e.g. https://master.example.com.", "server"),
        ),
    ] = None,
    provision_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help=_help(
                "One-time key from POST /clients; needed only for the first run. "
                "Prefer the variable: flags show up in the process list.",
                "provision_key",
            ),
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help=_help("Keeps the client id, token and unsent acks.", "state_dir"),
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help=_help("Seconds between heartbeats.", "heartbeat_interval", "30"),
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help=_help("Seconds between command polls.", "poll_interval", "5"),
        ),
    ] = None,
    service_port: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help=_help(
                "Port this device serves on, reported to the server.", "service_port"
            ),
        ),
    ] = None,
    exec_allow: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CMD",
            help=_help(
                "An exact command line the exec command may run; repeat for more. "
                "exec is off without one. The variable takes a JSON array.",
                "exec_allow",
            ),
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help=_help("Timeout of each HTTP request.", "request_timeout", "10"),
        ),
    ] = None,
    backoff_max: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help=_help("Longest wait between retries.", "backoff_max", "60"),
        ),
    ] = None,
    eth0_interface: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=_help("Interface reported as eth0.", "eth0_interface", "eth0"),
        ),
    ] = None,
    wlan0_interface: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=_help("Interface reported as wlan0.", "wlan0_interface", "wlan0"),
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            metavar="LEVEL",
            help=_help("debug, info, warning or error.", "log_level", "info"),
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="TOML file with any of these settings, by the same names; flags "
            "and variables override it. (env MASTER_AGENT_CONFIG)",
        ),
    ] = None,
) -> None:
    """Register (first run only), then report to the server until stopped."""
    flags = {
        "server": server,
        "provision_key": provision_key,
        "state_dir": state_dir,
        "heartbeat_interval": heartbeat_interval,
        "poll_interval": poll_interval,
        "service_port": service_port,
        "exec_allow": exec_allow,
        "request_timeout": request_timeout,
        "backoff_max": backoff_max,
        "eth0_interface": eth0_interface,
        "wlan0_interface": wlan0_interface,
        "log_level": log_level,
    }
    try:
        config = load_config(flags, os.environ, config_file)
    except ConfigError as exc:
        typer.echo(f"master-agent: {exc}", err=True)
        raise typer.Exit(ExitCode.NEEDS_OPERATOR) from None

    configure_logging(config.log_level)
    try:
        code = asyncio.run(_run_until_signalled(config))
    except AgentFatal as exc:
        typer.echo(f"master-agent: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code)


async def _run_until_signalled(config: AgentConfig) -> ExitCode:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log = structlog.get_logger("master_agent")

    def request_stop(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("agent.stopping", signal=signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    return await run_agent(config, stop)
