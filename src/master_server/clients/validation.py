"""Input checks for client records: addresses and ports."""

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt


def check_ip_address(value: str) -> str:
    """An IPv4 or IPv6 address, returned in its canonical (compressed) form.

    A zone (`fe80::1%eth0`) names an interface of the device itself, which
    means nothing to anyone else, so it is refused.
    """
    if "%" in value:
        raise ValueError("an address with a zone (%) is not accepted")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


IPAddress = Annotated[
    str,
    Field(
        max_length=45,
        description="An IPv4 or IPv6 address; stored and returned in canonical form.",
        examples=["192.0.2.10", "2001:db8::1"],
    ),
    AfterValidator(check_ip_address),
]

# StrictInt: a JSON true, 80.0 or "80" is not a port.
Port = Annotated[
    StrictInt,
    Field(ge=1, le=65535, description="A TCP port, an integer 1..65535."),
]
