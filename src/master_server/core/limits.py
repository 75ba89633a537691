"""Bounds on what a client may send to the telemetry endpoints.

Heartbeats and events arrive from every device all the time, so their bodies
get a tighter size limit than the app-wide one, and the free-form JSON they
carry (`metrics`, `data`) is bounded in depth and number of entries.

JSON as Python parses it is also wider than what the databases keep: `NaN` and
`Infinity` parse to floats that PostgreSQL's jsonb refuses, `\\u0000` is legal
JSON but not legal in PostgreSQL text, and a lone surrogate (`\\ud800`) cannot
be encoded as UTF-8. These writes are stored in batches, where one unstorable
item would fail the whole batch, so such input is refused as a 422 before it
gets near one.
"""

import json
import math
from typing import Any

import orjson
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from master_server.core.errors import UNREADABLE_BODY, PayloadTooLarge

TELEMETRY_MAX_BODY_BYTES = 64 * 1024

# A JSON document (heartbeat metrics, event data) may nest this many
# containers deep and hold this many entries in all (object members and array
# items, counted at every level).
MAX_DOCUMENT_DEPTH = 8
MAX_DOCUMENT_ENTRIES = 1024
MAX_KEY_LENGTH = 256


async def read_body_within(request: Request, max_bytes: int) -> bytes:
    """The request's body, or PayloadTooLarge (413) when it is over `max_bytes`.

    Checked before the body is parsed, so an oversized body is a 413 whatever
    it contains. The declared Content-Length is checked first; a chunked body
    is read (the app-wide limit still bounds it) and measured. The body stays
    cached on the request for whoever reads it next.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge.over(max_bytes)
    try:
        body = await request.body()
    except ClientDisconnect as exc:
        # Gone before the body was whole: what FastAPI answers to a body it
        # cannot read, so the log shows the client's fault, not a 500.
        raise HTTPException(400, UNREADABLE_BODY) from exc
    if len(body) > max_bytes:
        raise PayloadTooLarge.over(max_bytes)
    return body


def check_text(value: str) -> str:
    """Refuse text that PostgreSQL or UTF-8 cannot hold."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


def check_json(
    value: Any,
    *,
    max_depth: int,
    max_entries: int | None = None,
    max_key_length: int | None = None,
    max_bytes: int | None = None,
) -> Any:
    """Refuse a JSON document that is too deep, too big or not storable.

    Walks the document without recursion, so a deeply nested one is refused
    before anything recurses into it. Depth counts containers; entries count
    object members and array items at every level.
    """
    entries = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            entries += len(item)
            if max_entries is not None and entries > max_entries:
                raise ValueError(f"more than {max_entries} entries in all")
            if isinstance(item, dict):
                for key, child in item.items():
                    if max_key_length is not None and len(key) > max_key_length:
                        raise ValueError(
                            f"keys must be at most {max_key_length} characters"
                        )
                    check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)

    if max_bytes is not None and len(dumps_document(value).encode()) > max_bytes:
        raise ValueError(f"JSON is larger than {max_bytes} bytes once serialized")
    return value


def check_document(value: dict[str, Any]) -> dict[str, Any]:
    """The bounds on telemetry documents (heartbeat metrics, event data)."""
    checked: dict[str, Any] = check_json(
        value,
        max_depth=MAX_DOCUMENT_DEPTH,
        max_entries=MAX_DOCUMENT_ENTRIES,
        max_key_length=MAX_KEY_LENGTH,
    )
    return checked


def dumps_document(value: Any) -> str:
    """The JSON text stored for a checked document.

    orjson is fast but refuses integers beyond 64 bits, which JSON allows and
    a byte counter can reach; those few documents take the slower encoder.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
