import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.db import Database
from master_server.events.schemas import MAX_MESSAGE_LENGTH
from master_server.models import Client, Event, User
from master_server.models.base import utcnow
from tests.fixtures.fleet import Device, assign, row_count

Url = Callable[..., str]


async def post_event(
    client: httpx.AsyncClient,
    client_url: Url,
    device: Device,
    body: dict[str, Any],
    *,
    as_device: Device | None = None,
) -> httpx.Response:
    return await client.post(
        client_url("record_event", device.id),
        json=body,
        headers=(as_device or device).headers,
    )


async def list_events(
    client: httpx.AsyncClient,
    client_url: Url,
    device: Device,
    headers: dict[str, str],
    **params: Any,
) -> httpx.Response:
    return await client.get(
        client_url("list_events", device.id), params=params, headers=headers
    )


def messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [event["message"] for event in response.json()]


async def test_an_event_is_stored_and_returned_with_201(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    before = utcnow()
    response = await post_event(
        client,
        client_url,
        device,
        {"level": "warn", "message": "disk almost full", "data": {"pct": 93}},
    )

    assert response.status_code == 201, response.text
    event = response.json()
    assert set(event) == {"id", "client_id", "level", "message", "data", "created_at"}
    assert uuid.UUID(event["id"])
    assert event["client_id"] == str(device.id)
    assert (event["level"], event["message"], event["data"]) == (
        "warn",
        "disk almost full",
        {"pct": 93},
    )
    assert before <= datetime.fromisoformat(event["created_at"]) <= utcnow()

    listed = await list_events(client, client_url, device, admin_headers)
    assert listed.json() == [event]


@pytest.mark.parametrize("data", [None, {}])
async def test_an_event_may_carry_no_data(
    client: httpx.AsyncClient, device: Device, client_url: Url, data: Any
) -> None:
    body: dict[str, Any] = {"level": "info", "message": "booted"}
    if data is not None:
        body["data"] = data

    response = await post_event(client, client_url, device, body)

    assert response.status_code == 201
    assert response.json()["data"] == data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"level": "debug", "message": "m"}, "level"),
        ({"level": "INFO", "message": "m"}, "level"),
        ({"message": "m"}, "level"),
        ({"level": "info"}, "message"),
        ({"level": "info", "message": ""}, "message"),
        ({"level": "info", "message": "x" * (MAX_MESSAGE_LENGTH + 1)}, "message"),
        ({"level": "info", "message": 5}, "message"),
        ({"level": "info", "message": "nul \x00 here"}, "message"),
        ({"level": "info", "message": "m", "data": [1]}, "data"),
        ({"level": "info", "message": "m", "data": "text"}, "data"),
        ({"level": "info", "message": "m", "data": {"a": "\x00"}}, "data"),
        (
            {"level": "info", "message": "m", "client_id": str(uuid.uuid4())},
            "client_id",
        ),
    ],
)
async def test_an_invalid_event_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    device: Device,
    database: Database,
    client_url: Url,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await post_event(client, client_url, device, body)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert field in {detail["field"] for detail in response.json()["details"]}
    assert await row_count(database, Event) == 0


async def test_the_longest_allowed_message_is_stored(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    message = "é" * MAX_MESSAGE_LENGTH

    response = await post_event(
        client, client_url, device, {"level": "info", "message": message}
    )

    assert response.status_code == 201
    assert response.json()["message"] == message


async def test_any_text_and_data_come_back_exactly_as_sent(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    # Batches are written by hand-built statements on both databases:
    # nothing may be escaped, decoded or rounded on the way.
    tricky = 'quote " backslash \\ slash / tab \t line\nbreak \u0001 \u2028 é 𝄞 😀'
    body = {
        "level": "warn",
        "message": tricky,
        "data": {
            tricky: [tricky, 0.1 + 0.2, 2**64 + 1, 1.5e-7, None, True],
            "nested": {"\\": {"": "\u007f"}},
        },
    }

    response = await post_event(client, client_url, device, body)
    assert response.status_code == 201, response.text

    listed = await list_events(client, client_url, device, admin_headers)
    assert listed.status_code == 200, listed.text
    (event,) = listed.json()
    assert event["message"] == body["message"]
    assert event["data"] == body["data"]


async def test_an_event_body_over_64_kib_is_a_413(
    client: httpx.AsyncClient, device: Device, database: Database, client_url: Url
) -> None:
    response = await post_event(
        client,
        client_url,
        device,
        {"level": "info", "message": "m", "data": {"blob": "x" * 70_000}},
    )

    assert response.status_code == 413
    assert await row_count(database, Event) == 0


async def test_events_are_listed_newest_first(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    for n in range(5):
        response = await post_event(
            client, client_url, device, {"level": "info", "message": f"m{n}"}
        )
        assert response.status_code == 201

    listed = await list_events(client, client_url, device, admin_headers)

    assert messages(listed) == ["m4", "m3", "m2", "m1", "m0"]


async def insert_events(
    db: AsyncSession, device: Device, rows: list[tuple[str, str, datetime]]
) -> None:
    """Events straight into the table, in the order given."""
    await db.execute(
        insert(Event),
        [
            {
                "id": uuid.uuid4(),
                "client_id": device.id,
                "level": level,
                "message": message,
                "created_at": created_at,
            }
            for level, message, created_at in rows
        ],
    )
    await db.commit()


async def test_events_created_at_the_same_instant_keep_their_order(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    instant = utcnow()
    await insert_events(db, device, [("info", f"m{n}", instant) for n in range(4)])

    listed = await list_events(client, client_url, device, admin_headers)

    assert messages(listed) == ["m3", "m2", "m1", "m0"]


async def test_events_stored_out_of_the_order_received_are_listed_by_created_at(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    # Two server processes each store their own batch: an event received
    # first can be stored second. Newest first follows `created_at`, the
    # server's time of receipt, which `since` and `until` filter on too.
    received = utcnow()
    await insert_events(
        db,
        device,
        [
            ("info", "received second", received + timedelta(milliseconds=1)),
            ("info", "received first", received),
        ],
    )

    listed = await list_events(client, client_url, device, admin_headers)
    assert messages(listed) == ["received second", "received first"]

    until_first = await list_events(
        client, client_url, device, admin_headers, until=received.isoformat()
    )
    assert messages(until_first) == ["received first"]


async def test_limit_and_offset_page_through_newest_first(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    now = utcnow()
    await insert_events(db, device, [("info", f"m{n}", now) for n in range(6)])

    pages = [
        messages(
            await list_events(
                client, client_url, device, admin_headers, limit=2, offset=offset
            )
        )
        for offset in (0, 2, 4, 6)
    ]

    assert pages == [["m5", "m4"], ["m3", "m2"], ["m1", "m0"], []]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": -1}, {"offset": "x"}],
)
async def test_a_bad_limit_or_offset_is_a_422(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
    params: dict[str, Any],
) -> None:
    response = await list_events(client, client_url, device, admin_headers, **params)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.fixture
async def timeline(db: AsyncSession, device: Device) -> datetime:
    """Four events an hour apart, alternating levels; returns the first's time."""
    start = datetime.fromisoformat("2026-12-03T10:00:00+00:00")
    await insert_events(
        db,
        device,
        [
            ("info", "at 10", start),
            ("error", "at 11", start + timedelta(hours=1)),
            ("info", "at 12", start + timedelta(hours=2)),
            ("error", "at 13", start + timedelta(hours=3)),
        ],
    )
    return start


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"level": "error"}, ["at 13", "at 11"]),
        ({"level": "warn"}, []),
        ({"since": "2026-12-03T11:00:00Z"}, ["at 13", "at 12", "at 11"]),
        ({"until": "2026-12-03T11:00:00Z"}, ["at 11", "at 10"]),
        (
            {"since": "2026-12-03T10:30:00Z", "until": "2026-12-03T12:30:00Z"},
            ["at 12", "at 11"],
        ),
        ({"since": "2026-12-03T12:00:00+01:00"}, ["at 13", "at 12", "at 11"]),
        ({"until": "2026-12-03T05:00:00-05:00"}, ["at 10"]),
        ({"since": "2026-12-03T11:00:00.000001Z"}, ["at 13", "at 12"]),
        ({"since": "2026-12-03t11:00:00z"}, ["at 13", "at 12", "at 11"]),
        ({"level": "info", "since": "2026-12-03T11:00:00Z"}, ["at 12"]),
        ({"since": "2026-12-03T14:00:00Z", "until": "2026-12-03T09:00:00Z"}, []),
    ],
)
async def test_events_are_filtered_by_level_since_and_until(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    timeline: datetime,
    client_url: Url,
    params: dict[str, str],
    expected: list[str],
) -> None:
    listed = await list_events(client, client_url, device, admin_headers, **params)

    assert messages(listed) == expected


async def test_an_unencoded_plus_in_the_offset_is_read_as_a_plus(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    timeline: datetime,
    client_url: Url,
) -> None:
    path = client_url("list_events", device.id)

    response = await client.get(
        f"{path}?since=2026-12-03T12:00:00+01:00", headers=admin_headers
    )

    assert messages(response) == ["at 13", "at 12", "at 11"]


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-03T11:00:00",  # naive
        "2026-12-03 11:00:00",  # naive
        "2026-12-03",
        "yesterday",
        "1764759600",
        "2026-13-03T11:00:00Z",
        "2026-02-30T11:00:00Z",
        "2026-12-03T11:00:00+25:00",
        "2026-12-03T11:00Z",
        "9999-12-31T23:59:59-01:00",  # past the last representable instant
        "2026-12-03T11:00:00Z\n",
        "",
    ],
)
@pytest.mark.parametrize("name", ["since", "until"])
async def test_a_naive_or_unparsable_time_is_a_422(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
    name: str,
    value: str,
) -> None:
    response = await list_events(
        client, client_url, device, admin_headers, **{name: value}
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["details"][0]["field"] == name


async def test_an_unknown_level_filter_is_a_422(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    response = await list_events(
        client, client_url, device, admin_headers, level="fatal"
    )

    assert response.status_code == 422


async def test_a_clients_events_are_its_own(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    admin_headers: dict[str, str],
    client_url: Url,
) -> None:
    await post_event(client, client_url, device, {"level": "info", "message": "a"})
    await post_event(
        client, client_url, other_device, {"level": "info", "message": "b"}
    )

    listed = await list_events(client, client_url, device, admin_headers)

    assert messages(listed) == ["a"]


async def test_a_client_token_on_another_clients_events_is_a_404_and_stores_nothing(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    database: Database,
    client_url: Url,
) -> None:
    response = await post_event(
        client,
        client_url,
        other_device,
        {"level": "info", "message": "not mine"},
        as_device=device,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"
    assert await row_count(database, Event) == 0


async def test_a_session_token_cannot_post_an_event(
    client: httpx.AsyncClient,
    device: Device,
    admin_headers: dict[str, str],
    database: Database,
    client_url: Url,
) -> None:
    response = await client.post(
        client_url("record_event", device.id),
        json={"level": "info", "message": "m"},
        headers=admin_headers,
    )

    assert response.status_code == 401
    assert await row_count(database, Event) == 0


async def test_a_client_token_cannot_list_events(
    client: httpx.AsyncClient, device: Device, client_url: Url
) -> None:
    response = await list_events(client, client_url, device, device.headers)

    assert response.status_code == 401


async def test_an_assigned_user_lists_the_events(
    client: httpx.AsyncClient,
    device: Device,
    user: User,
    user_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    await assign(db, user, device.client)
    await post_event(client, client_url, device, {"level": "info", "message": "a"})

    listed = await list_events(client, client_url, device, user_headers)

    assert messages(listed) == ["a"]


async def test_a_user_not_assigned_to_the_client_gets_404_for_its_events(
    client: httpx.AsyncClient,
    device: Device,
    other_device: Device,
    user: User,
    user_headers: dict[str, str],
    db: AsyncSession,
    client_url: Url,
) -> None:
    await assign(db, user, other_device.client)

    response = await list_events(client, client_url, device, user_headers)

    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"


async def test_events_of_an_unknown_client_are_a_404(
    client: httpx.AsyncClient, admin_headers: dict[str, str], client_url: Url
) -> None:
    response = await client.get(
        client_url("list_events", uuid.uuid4()), headers=admin_headers
    )

    assert response.status_code == 404


async def test_a_deleted_clients_token_cannot_post_events(
    client: httpx.AsyncClient,
    device: Device,
    db: AsyncSession,
    database: Database,
    client_url: Url,
) -> None:
    await db.execute(delete(Client).where(Client.id == device.id))
    await db.commit()

    response = await post_event(
        client, client_url, device, {"level": "info", "message": "ghost"}
    )

    assert response.status_code == 401
    assert await row_count(database, Event) == 0
