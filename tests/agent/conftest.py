from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from master_agent.config import AgentConfig

from .fakes import FakeServer

SERVER_URL = "http://master.test"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_config(state_dir: Path) -> Callable[..., AgentConfig]:
    def make(**overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "server": SERVER_URL,
            "provision_key": "pk-test",
            "state_dir": state_dir,
            "heartbeat_interval": 0.1,
            "poll_interval": 0.1,
            "backoff_max": 1.0,
            "request_timeout": 1.0,
        }
        values.update(overrides)
        return AgentConfig.model_validate(values)

    return make


@pytest.fixture
def fake_server() -> FakeServer:
    return FakeServer()
