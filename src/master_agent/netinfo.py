"""The host's network addresses, as the server's client record wants them."""

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class NetworkInfo:
    eth0: str | None
    wlan0: str | None
    service_port: int | None


def interface_address(
    name: str, interfaces: Mapping[str, Sequence[Any]] | None = None
) -> str | None:
    """The interface's IPv4 address, else a routable IPv6 address, else None.

    ``interfaces`` has the shape of ``psutil.net_if_addrs()``, which is read
    when it is not given.
    """
    if interfaces is None:
        interfaces = psutil.net_if_addrs()
    addresses = interfaces.get(name, ())

    for address in addresses:
        if address.family == socket.AF_INET:
            return str(address.address)

    for address in addresses:
        if address.family != socket.AF_INET6:
            continue
        # psutil renders link-local addresses with a zone ("fe80::1%eth0");
        # without the zone they cannot be reached, so they are not reported.
        candidate = ipaddress.IPv6Address(str(address.address).split("%")[0])
        if not candidate.is_link_local:
            return str(candidate)

    return None


def collect_network(
    eth0_interface: str, wlan0_interface: str, service_port: int | None
) -> NetworkInfo:
    interfaces = psutil.net_if_addrs()
    return NetworkInfo(
        eth0=interface_address(eth0_interface, interfaces),
        wlan0=interface_address(wlan0_interface, interfaces),
        service_port=service_port,
    )
