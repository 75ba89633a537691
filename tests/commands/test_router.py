import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.models import Command, CommandStatus, User
from tests.clients.factories import ProvisionedClient, create_client, create_command

COMMAND_FIELDS = {
    "id",
    "client_id",
    "command",
    "payload",
    "status",
    "created_by",
    "created_at",
    "sent_at",
    "acked_at",
    "result",
}


async def stored(db: AsyncSession, command_id: uuid.UUID | str) -> Command:
    command = await db.scalar(
        select(Command)
        .where(Command.id == uuid.UUID(str(command_id)))
        .execution_options(populate_existing=True)
    )
    assert command is not None
    await db.commit()
    return command


async def poll(
    app: FastAPI, http: httpx.AsyncClient, device: ProvisionedClient, **params: int
) -> httpx.Response:
    return await http.get(
        app.url_path_for("list_commands", client_id=str(device.id)),
        params=params,
        headers=device.headers,
    )


async def ack(
    app: FastAPI,
    http: httpx.AsyncClient,
    device: ProvisionedClient,
    command_id: uuid.UUID | str,
    body: object,
) -> httpx.Response:
    return await http.post(
        app.url_path_for(
            "acknowledge_command",
            client_id=str(device.id),
            command_id=str(command_id),
        ),
        json=body,
        headers=device.headers,
    )


# --- create ---------------------------------------------------------------


async def test_an_assigned_user_queues_a_pending_command(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])

    response = await client.post(
        app.url_path_for("create_command", client_id=str(device.id)),
        json={"command": "service.restart", "payload": {"unit": "nginx"}},
        headers=user_headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == COMMAND_FIELDS
    assert body["client_id"] == str(device.id)
    assert body["command"] == "service.restart"
    assert body["payload"] == {"unit": "nginx"}
    assert body["status"] == "pending"
    assert body["created_by"] == str(user.id)
    assert body["sent_at"] is None and body["acked_at"] is None
    assert body["result"] is None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


async def test_an_admin_queues_a_command_without_payload(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    admin_headers: dict,
) -> None:
    device = await create_client(db)

    for body in ({"command": "reboot"}, {"command": "reboot", "payload": None}):
        response = await client.post(
            app.url_path_for("create_command", client_id=str(device.id)),
            json=body,
            headers=admin_headers,
        )
        assert response.status_code == 201
        assert response.json()["payload"] is None
        assert response.json()["created_by"] == str(admin.id)


async def test_a_command_can_be_queued_for_a_client_that_has_not_registered(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db, registered=False)

    response = await client.post(
        app.url_path_for("create_command", client_id=str(device.id)),
        json={"command": "reboot"},
        headers=admin_headers,
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"command": ""},
        {"command": "x" * 65},
        {"command": "-rf"},
        {"command": "rm -rf /"},
        {"command": "reboot\n"},
        {"command": 7},
        {"command": "reboot", "payload": [1, 2]},
        {"command": "reboot", "payload": "text"},
        {"command": "reboot", "payload": {"blob": "x" * 70_000}},
        {"command": "reboot", "payload": {"nul": "a\u0000b"}},
        {"command": "reboot", "status": "acked"},
        {"command": "reboot", "created_by": str(uuid.uuid4())},
    ],
)
async def test_queueing_a_command_refuses_invalid_input(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    body: dict,
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("create_command", client_id=str(device.id)),
        json=body,
        headers=admin_headers,
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert (await poll(app, client, device)).json() == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"command": "reboot", "payload": {"x": NaN}}',
        b'{"command": "reboot", "payload": {"x": Infinity}}',
        b'{"command": "reboot", "payload": {"x": 1e999}}',
        b'{"command": "reboot", "payload": {"x": "\\ud800"}}',
        b'{"command": "reboot", "payload": {"\\u0000": 1}}',
        b'{"command": "reboot", "payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 41,
    ],
)
async def test_a_payload_the_database_cannot_store_is_invalid_input(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin_headers: dict,
    raw: bytes,
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("create_command", client_id=str(device.id)),
        content=raw,
        headers={**admin_headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text


async def test_a_client_token_may_not_queue_commands(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)

    response = await client.post(
        app.url_path_for("create_command", client_id=str(device.id)),
        json={"command": "reboot"},
        headers=device.headers,
    )

    assert response.status_code == 401


# --- list for users ----------------------------------------------------------


async def test_users_see_commands_newest_first_without_side_effects(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    user: User,
    user_headers: dict,
) -> None:
    device = await create_client(db, assigned_to=[user])
    made = [
        await create_command(db, device.id, command=f"c{n}", created_by=user.id)
        for n in range(3)
    ]
    url = app.url_path_for("list_commands", client_id=str(device.id))

    first = await client.get(url, headers=user_headers)
    second = await client.get(url, headers=user_headers)

    assert first.status_code == 200
    assert [item["id"] for item in first.json()] == [str(m) for m in reversed(made)]
    assert all(set(item) == COMMAND_FIELDS for item in first.json())
    assert second.json() == first.json()
    assert {item["status"] for item in second.json()} == {"pending"}


async def test_users_filter_commands_by_status_and_page_them(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    admin: User,
    admin_headers: dict,
) -> None:
    device = await create_client(db)
    pending = [await create_command(db, device.id) for _ in range(3)]
    acked = await create_command(db, device.id, status=CommandStatus.ACKED)
    url = app.url_path_for("list_commands", client_id=str(device.id))

    only_acked = await client.get(
        url, params={"status": "acked"}, headers=admin_headers
    )
    paged = await client.get(
        url,
        params={"status": "pending", "limit": 1, "offset": 1},
        headers=admin_headers,
    )
    bad = await client.get(url, params={"status": "done"}, headers=admin_headers)

    assert [item["id"] for item in only_acked.json()] == [str(acked)]
    assert [item["id"] for item in paged.json()] == [str(pending[1])]
    assert bad.status_code == 422


async def store_in_order(
    db: AsyncSession, client_id: uuid.UUID, commands: list[tuple[str, datetime]]
) -> None:
    """Store the (name, created_at) commands one by one, in the order given."""
    for name, created_at in commands:
        db.add(Command(client_id=client_id, command=name, created_at=created_at))
        await db.flush()
    await db.commit()


async def listed_and_polled(
    app: FastAPI,
    client: httpx.AsyncClient,
    device: ProvisionedClient,
    admin_headers: dict[str, str],
) -> tuple[list[str], list[str]]:
    """The names of the client's commands as an admin lists them, then as it polls."""
    listed = await client.get(
        app.url_path_for("list_commands", client_id=str(device.id)),
        headers=admin_headers,
    )
    polled = await poll(app, client, device)
    return (
        [item["command"] for item in listed.json()],
        [item["command"] for item in polled.json()],
    )


async def test_commands_created_in_the_same_instant_keep_their_creation_order(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    same_time = datetime.fromisoformat("2026-12-03T12:00:00+00:00")
    await store_in_order(db, device.id, [(f"c{n}", same_time) for n in range(5)])

    listed, polled = await listed_and_polled(app, client, device, admin_headers)

    assert listed == ["c4", "c3", "c2", "c1", "c0"]
    assert polled == ["c0", "c1", "c2", "c3", "c4"]


async def test_commands_stored_out_of_creation_order_follow_created_at(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    # Two server processes each store their own command: one created first
    # can be stored second. Lists and polls follow `created_at`, the time
    # each command shows.
    device = await create_client(db)
    created = datetime.fromisoformat("2026-12-03T12:00:00+00:00")
    await store_in_order(
        db,
        device.id,
        [
            ("created second", created + timedelta(milliseconds=1)),
            ("created first", created),
        ],
    )

    listed, polled = await listed_and_polled(app, client, device, admin_headers)

    assert listed == ["created second", "created first"]
    assert polled == ["created first", "created second"]


# --- poll ---------------------------------------------------------------------


async def test_a_poll_hands_out_pending_commands_oldest_first_and_marks_them_sent(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin: User
) -> None:
    device = await create_client(db)
    made = [
        await create_command(db, device.id, payload={"n": n}, created_by=admin.id)
        for n in range(3)
    ]
    done = await create_command(db, device.id, status=CommandStatus.ACKED)

    first = await poll(app, client, device)
    second = await poll(app, client, device)

    assert first.status_code == 200
    assert [item["id"] for item in first.json()] == [str(m) for m in made]
    assert [item["payload"] for item in first.json()] == [{"n": n} for n in range(3)]
    assert {item["status"] for item in first.json()} == {"sent"}
    assert all(item["sent_at"] is not None for item in first.json())
    assert second.json() == []
    for command_id in made:
        row = await stored(db, command_id)
        assert row.status == "sent" and row.sent_at is not None
    assert (await stored(db, done)).status == "acked"


async def test_a_poll_honours_its_limit(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    made = [await create_command(db, device.id) for _ in range(5)]

    first = await poll(app, client, device, limit=2)
    rest = await poll(app, client, device)

    assert [item["id"] for item in first.json()] == [str(m) for m in made[:2]]
    assert [item["id"] for item in rest.json()] == [str(m) for m in made[2:]]


async def test_a_poll_returns_only_the_clients_own_commands(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db, name="a")
    other = await create_client(db, name="b")
    mine = await create_command(db, device.id)
    theirs = await create_command(db, other.id)

    response = await poll(app, client, device)

    assert [item["id"] for item in response.json()] == [str(mine)]
    assert (await stored(db, theirs)).status == "pending"


async def test_a_user_listing_after_a_poll_sees_the_commands_as_sent(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    await create_command(db, device.id)

    await poll(app, client, device)
    listed = await client.get(
        app.url_path_for("list_commands", client_id=str(device.id)),
        headers=admin_headers,
    )

    assert [item["status"] for item in listed.json()] == ["sent"]


async def test_twenty_concurrent_polls_hand_out_fifty_commands_exactly_once(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    made = {str(await create_command(db, device.id)) for _ in range(50)}

    responses = await asyncio.gather(
        *[poll(app, client, device, limit=7) for _ in range(20)]
    )

    assert {r.status_code for r in responses} == {200}
    delivered = [item["id"] for r in responses for item in r.json()]
    assert sorted(delivered) == sorted(made)
    for response in responses:
        ids = [item["id"] for item in response.json()]
        assert len(ids) == len(set(ids))


# --- ack ---------------------------------------------------------------------


async def test_an_ack_finishes_a_sent_command_with_its_result(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id)
    await poll(app, client, device)

    response = await ack(
        app, client, device, command_id, {"status": "acked", "result": {"rc": 0}}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == COMMAND_FIELDS
    assert body["status"] == "acked"
    assert body["result"] == {"rc": 0}
    assert body["acked_at"] is not None and body["sent_at"] is not None
    row = await stored(db, command_id)
    assert row.status == "acked" and row.result == {"rc": 0}


@pytest.mark.parametrize(
    "result", [None, "done", 3, 2.5, True, [1, "two", None], {"nested": {"a": [1]}}]
)
async def test_a_failed_ack_keeps_any_json_result(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, result: object
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)

    response = await ack(
        app, client, device, command_id, {"status": "failed", "result": result}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["result"] == result


async def test_an_ack_without_result_is_accepted(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)

    response = await ack(app, client, device, command_id, {"status": "acked"})

    assert response.status_code == 200
    assert response.json()["result"] is None


async def test_repeating_the_same_ack_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)
    first = await ack(app, client, device, command_id, {"status": "acked", "result": 1})

    again = await ack(app, client, device, command_id, {"status": "acked", "result": 1})
    other_result = await ack(
        app, client, device, command_id, {"status": "acked", "result": 2}
    )

    assert again.status_code == 200
    assert other_result.status_code == 200
    assert again.json() == first.json()
    assert other_result.json() == first.json()
    assert (await stored(db, command_id)).result == 1


@pytest.mark.parametrize(
    ("first", "second"), [("acked", "failed"), ("failed", "acked")]
)
async def test_a_different_ack_on_a_finished_command_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, first: str, second: str
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)
    await ack(app, client, device, command_id, {"status": first})

    response = await ack(app, client, device, command_id, {"status": second})

    assert response.status_code == 409
    assert response.json()["code"] == "command_already_acknowledged"
    assert (await stored(db, command_id)).status == first


async def test_acking_a_command_that_was_never_handed_out_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id)

    response = await ack(app, client, device, command_id, {"status": "acked"})

    assert response.status_code == 409
    assert response.json()["code"] == "command_not_sent"
    row = await stored(db, command_id)
    assert row.status == "pending" and row.acked_at is None
    assert [item["id"] for item in (await poll(app, client, device)).json()] == [
        str(command_id)
    ]


async def test_acking_an_unknown_command_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)

    response = await ack(app, client, device, uuid.uuid4(), {"status": "acked"})

    assert response.status_code == 404
    assert response.json()["code"] == "command_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "sent"},
        {"status": "pending"},
        {"status": "ACKED"},
        {"status": "acked", "extra": 1},
        {"status": "acked", "result": "x" * 70_000},
        {"status": "acked", "result": {"nul": "\u0000"}},
    ],
)
async def test_an_ack_refuses_invalid_input(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, body: dict
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)

    response = await ack(app, client, device, command_id, body)

    assert response.status_code == 422, response.text
    assert (await stored(db, command_id)).status == "sent"


async def test_an_ack_with_a_nan_result_is_invalid_input(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)

    response = await client.post(
        app.url_path_for(
            "acknowledge_command", client_id=str(device.id), command_id=str(command_id)
        ),
        content=b'{"status": "acked", "result": NaN}',
        headers={**device.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert (await stored(db, command_id)).status == "sent"


async def test_concurrent_conflicting_acks_finish_a_command_once(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)

    responses = await asyncio.gather(
        *[
            ack(app, client, device, command_id, {"status": status})
            for status in ["acked", "failed"] * 5
        ]
    )

    final = (await stored(db, command_id)).status
    for response in responses:
        sent_status = response.request.content.decode()
        if final in sent_status:
            assert response.status_code == 200
        else:
            assert response.status_code == 409


async def test_an_ack_after_the_command_was_deleted_with_its_client_is_401(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, admin_headers: dict
) -> None:
    device = await create_client(db)
    command_id = await create_command(db, device.id, status=CommandStatus.SENT)
    await client.delete(
        app.url_path_for("delete_client", client_id=str(device.id)),
        headers=admin_headers,
    )

    response = await ack(app, client, device, command_id, {"status": "acked"})

    assert response.status_code == 401
