"""JSON-lines logging for the agent; `configure_logging` is called by the CLI only."""

import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# Field names that must never reach a log line, whoever passes them.
_SECRET_FIELDS = frozenset({"token", "provision_key", "authorization", "password"})


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in _SECRET_FIELDS.intersection(event_dict):
        event_dict[name] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """One JSON object a line on ``stream`` (stdout), flushed at each line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
