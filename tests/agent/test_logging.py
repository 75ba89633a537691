import io
import json
from collections.abc import Iterator

import pytest
import structlog

from master_agent.logging import configure_logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_log_line_is_one_json_object_with_event_level_and_time(
    log_stream: io.StringIO,
) -> None:
    structlog.get_logger().info("agent.ready", client_id="c-1")

    [line] = lines(log_stream)
    assert line["event"] == "agent.ready"
    assert line["client_id"] == "c-1"
    assert line["level"] == "info"
    assert str(line["timestamp"]).endswith("Z")


def test_secrets_are_redacted_whoever_logs_them(log_stream: io.StringIO) -> None:
    structlog.get_logger().warning(
        "oops", token="tok-secret", provision_key="pk-secret"
    )

    assert "tok-secret" not in log_stream.getvalue()
    assert "pk-secret" not in log_stream.getvalue()
    [line] = lines(log_stream)
    assert line["token"] == "[redacted]"


def test_debug_lines_are_dropped_at_info_level(log_stream: io.StringIO) -> None:
    structlog.get_logger().debug("heartbeat.sent")

    assert log_stream.getvalue() == ""
