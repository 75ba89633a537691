import socket
from typing import NamedTuple

from master_agent.metrics import collect_metrics, uptime_seconds
from master_agent.netinfo import interface_address


class Address(NamedTuple):
    family: int
    address: str


def test_an_ipv4_address_is_preferred() -> None:
    interfaces = {
        "eth0": [
            Address(socket.AF_INET6, "2001:db8::10"),
            Address(socket.AF_INET, "192.0.2.10"),
        ]
    }

    assert interface_address("eth0", interfaces) == "192.0.2.10"


def test_a_routable_ipv6_address_is_used_without_ipv4() -> None:
    interfaces = {
        "wlan0": [
            Address(socket.AF_INET6, "fe80::1%wlan0"),
            Address(socket.AF_INET6, "2001:db8::20"),
        ]
    }

    assert interface_address("wlan0", interfaces) == "2001:db8::20"


def test_a_link_local_address_alone_counts_as_no_address() -> None:
    interfaces = {"eth0": [Address(socket.AF_INET6, "fe80::1%eth0")]}

    assert interface_address("eth0", interfaces) is None


def test_a_missing_interface_has_no_address() -> None:
    interfaces = {"lo": [Address(socket.AF_INET, "127.0.0.1")]}

    assert interface_address("eth0", interfaces) is None


def test_link_layer_addresses_are_ignored() -> None:
    interfaces = {"eth0": [Address(socket.AF_PACKET, "02:42:ac:11:00:02")]}

    assert interface_address("eth0", interfaces) is None


def test_heartbeat_metrics_are_small_and_numeric() -> None:
    metrics = collect_metrics()

    assert {"load1", "load5", "load15", "mem_percent"} <= set(metrics)
    assert all(isinstance(value, int | float) for value in metrics.values())
    assert uptime_seconds() > 0
