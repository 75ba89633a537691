"""Input checks that keep what clients send storable on every backend.

JSON as Python parses it is wider than what the databases keep: `NaN` and
`Infinity` parse to floats that PostgreSQL's jsonb refuses, `\\u0000` is legal
JSON but not legal in PostgreSQL text, and a lone surrogate (`\\ud800`) cannot
be encoded as UTF-8 at all. Each of these would surface as a 500 when written,
so they are refused here, at validation, as a 422.
"""

import ipaddress
import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt

MAX_JSON_DEPTH = 32


def check_text(value: str) -> str:
    """Refuse text that PostgreSQL or UTF-8 cannot hold."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


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
            if item != item or item in (float("inf"), float("-inf")):
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
