import os
import subprocess
from pathlib import Path

import pytest

from master_agent.config import AgentConfig, ConfigError, load_config
from tests.fixtures.server import bin_path, free_port

REQUIRED_ENV = {
    "MASTER_AGENT_SERVER": "http://env.test",
    "MASTER_AGENT_STATE_DIR": "/var/lib/agent",
}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_else_sets_a_value() -> None:
    config = load_config({}, REQUIRED_ENV)

    assert config.heartbeat_interval == 30
    assert config.poll_interval == 5
    assert config.service_port is None
    assert config.exec_allow == ()
    assert config.provision_key is None


def test_config_file_beats_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "heartbeat_interval = 12\npoll-interval = 3\n")

    config = load_config({}, REQUIRED_ENV, path)

    assert config.heartbeat_interval == 12
    assert config.poll_interval == 3


def test_environment_beats_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'server = "http://file.test"\nservice_port = 80\n')
    environ = {**REQUIRED_ENV, "MASTER_AGENT_SERVICE_PORT": "8443"}

    config = load_config({}, environ, path)

    assert config.server == "http://env.test"
    assert config.service_port == 8443


def test_flags_beat_environment_and_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'exec_allow = ["uptime"]\nheartbeat_interval = 7\n')
    environ = {**REQUIRED_ENV, "MASTER_AGENT_HEARTBEAT_INTERVAL": "8"}

    config = load_config(
        {"heartbeat_interval": 9.5, "exec_allow": ["df -h"], "server": "http://f.test"},
        environ,
        path,
    )

    assert config.heartbeat_interval == 9.5
    assert config.exec_allow == ("df -h",)
    assert config.server == "http://f.test"


def test_flags_left_unset_do_not_hide_lower_layers() -> None:
    environ = {**REQUIRED_ENV, "MASTER_AGENT_EXEC_ALLOW": '["uptime", "df -h"]'}

    config = load_config({"exec_allow": [], "poll_interval": None}, environ)

    assert config.exec_allow == ("uptime", "df -h")
    assert config.poll_interval == 5


def test_config_file_can_be_named_by_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'provision_key = "pk-from-file"\n')
    environ = {**REQUIRED_ENV, "MASTER_AGENT_CONFIG": str(path)}

    config = load_config({}, environ)

    assert config.provision_key is not None
    assert config.provision_key.get_secret_value() == "pk-from-file"


def test_empty_environment_variables_count_as_unset() -> None:
    environ = {**REQUIRED_ENV, "MASTER_AGENT_SERVICE_PORT": ""}

    assert load_config({}, environ).service_port is None


def test_missing_server_is_reported_with_every_way_to_set_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"state_dir": Path("/tmp/x")}, {})

    assert "--server" in str(caught.value)
    assert "MASTER_AGENT_SERVER" in str(caught.value)


def test_invalid_value_names_the_setting_and_where_it_came_from() -> None:
    environ = {**REQUIRED_ENV, "MASTER_AGENT_SERVICE_PORT": "70000"}

    with pytest.raises(ConfigError) as caught:
        load_config({}, environ)

    assert "service_port (from MASTER_AGENT_SERVICE_PORT)" in str(caught.value)


@pytest.mark.parametrize(
    "server", ["ftp://master.test", "master.test", "http://", "not a url"]
)
def test_server_must_be_an_http_url(server: str) -> None:
    with pytest.raises(ConfigError):
        load_config({"server": server}, REQUIRED_ENV)


def test_a_relative_state_dir_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    config = load_config({"state_dir": Path("agent-state")}, REQUIRED_ENV)

    assert config.state_dir == tmp_path / "agent-state"


def test_server_url_loses_its_trailing_slash() -> None:
    config = load_config({"server": "https://master.test/prefix/"}, REQUIRED_ENV)

    assert config.server == "https://master.test/prefix"


def test_exec_allow_from_environment_must_be_a_json_array() -> None:
    environ = {**REQUIRED_ENV, "MASTER_AGENT_EXEC_ALLOW": "df -h"}

    with pytest.raises(ConfigError, match="JSON array"):
        load_config({}, environ)


def test_exec_allow_refuses_an_unparsable_command_line() -> None:
    with pytest.raises(ConfigError, match="exec_allow"):
        load_config({"exec_allow": ['echo "unclosed']}, REQUIRED_ENV)


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "heartbeat_intervall = 5\n")

    with pytest.raises(ConfigError, match="heartbeat_intervall"):
        load_config({}, REQUIRED_ENV, path)


def test_broken_config_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, "heartbeat_interval = \n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, REQUIRED_ENV, path)


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config({}, REQUIRED_ENV, tmp_path / "absent.toml")


def test_provision_key_does_not_show_in_the_config_repr() -> None:
    config = AgentConfig(
        server="http://m.test", state_dir=Path("/x"), provision_key="pk-secret"
    )

    assert "pk-secret" not in repr(config)


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_provision_key_flag_or_file_entry_is_refused(
    tmp_path: Path, blank: str
) -> None:
    path = write_config(tmp_path, f'provision_key = "{blank}"\n')

    with pytest.raises(ConfigError) as from_flag:
        load_config({"provision_key": blank}, REQUIRED_ENV)
    with pytest.raises(ConfigError) as from_file:
        load_config({}, REQUIRED_ENV, path)

    assert str(from_flag.value) == (
        "provision_key (from --provision-key): provision key is empty"
    )
    assert str(from_file.value) == (
        f"provision_key (from config file {path}): provision key is empty"
    )


def run_agent_briefly(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MASTER_AGENT_")
    }
    return subprocess.run(
        [
            bin_path("master-agent"),
            "run",
            "--server",
            f"http://127.0.0.1:{free_port()}",
            "--state-dir",
            str(tmp_path / "state"),
            *args,
        ],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_agent_refuses_an_empty_provision_key_flag_before_starting(
    tmp_path: Path,
) -> None:
    result = run_agent_briefly(tmp_path, "--provision-key", "")

    assert result.returncode == 2
    assert result.stderr == (
        "master-agent: provision_key (from --provision-key): provision key is empty\n"
    )
    assert result.stdout == ""


def test_the_agent_with_an_empty_provision_key_variable_and_no_state_says_so(
    tmp_path: Path,
) -> None:
    result = run_agent_briefly(tmp_path, env={"MASTER_AGENT_PROVISION_KEY": ""})

    assert result.returncode == 2
    assert result.stderr.startswith(
        "master-agent: this client is not registered yet (no state in "
    )
    assert "Traceback" not in result.stderr
