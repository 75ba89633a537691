"""Input checks for client records and commands: addresses, ports, JSON.

Like the telemetry bounds in `master_server.core.limits`, they refuse at
validation (422) what the databases could not store (NaN, NUL, lone
surrogates) instead of letting it fail as a 500 on write.
"""

import ipaddress
import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt

from master_server.core.limits import check_text

MAX_JSON_DEPTH = 32


def check_json(value: Any, *, max_bytes: int) -> Any:
    """Refuse a JSON document that is too deep, too big or not storable.

    Walks the document without recursion, so a deeply nested body is refused
    before anything else recurses into it.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)

    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise ValueError(f"JSON is larger than {max_bytes} bytes once serialized")
    return value


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
