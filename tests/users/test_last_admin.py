"""The last enabled admin cannot be deleted, disabled or demoted, even in a race."""

import asyncio

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from master_server.core.db import Database
from master_server.core.security import PasswordHashing
from master_server.models import User, UserRole
from tests.fixtures.app import USER_PASSWORD, create_user, login

LAST_ADMIN = {
    "error": "the last enabled admin cannot be deleted, disabled or demoted",
    "code": "last_admin",
}


async def enabled_admins(database: Database) -> int:
    async with database.engine.connect() as connection:
        total: int = await connection.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", User.is_disabled.is_(False))
        )
    return total


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("DELETE", None),
        ("PATCH", {"disabled": True}),
        ("PATCH", {"role": "user"}),
        ("PATCH", {"role": "user", "disabled": True}),
    ],
)
async def test_the_last_enabled_admin_cannot_remove_themselves(
    client: httpx.AsyncClient,
    admin: User,
    admin_headers: dict[str, str],
    database: Database,
    method: str,
    body: dict[str, object] | None,
) -> None:
    response = await client.request(
        method, f"/users/{admin.id}", headers=admin_headers, json=body
    )

    assert response.status_code == 409
    assert response.json() == LAST_ADMIN
    assert await enabled_admins(database) == 1
    assert (await client.get("/auth/me", headers=admin_headers)).status_code == 200


async def test_a_disabled_admin_does_not_count_as_another_admin(
    client: httpx.AsyncClient,
    admin: User,
    admin_headers: dict[str, str],
    db: AsyncSession,
    hashing: PasswordHashing,
) -> None:
    other = await create_user(db, hashing, username="root", role=UserRole.ADMIN)
    other.is_disabled = True
    await db.commit()

    response = await client.patch(
        f"/users/{admin.id}", headers=admin_headers, json={"role": "user"}
    )

    assert response.status_code == 409


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("DELETE", None),
        ("PATCH", {"disabled": True}),
        ("PATCH", {"role": "user"}),
    ],
)
async def test_an_admin_can_go_while_another_enabled_admin_remains(
    client: httpx.AsyncClient,
    admin: User,
    admin_headers: dict[str, str],
    db: AsyncSession,
    hashing: PasswordHashing,
    database: Database,
    method: str,
    body: dict[str, object] | None,
) -> None:
    await create_user(db, hashing, username="root", role=UserRole.ADMIN)

    response = await client.request(
        method, f"/users/{admin.id}", headers=admin_headers, json=body
    )

    assert response.status_code in {200, 204}
    assert await enabled_admins(database) == 1


async def test_the_last_admin_may_still_change_their_own_password(
    client: httpx.AsyncClient, admin: User, admin_headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/users/{admin.id}",
        headers=admin_headers,
        json={"password": "another-admin-password", "role": "admin", "disabled": False},
    )

    assert response.status_code == 200
    assert await login(client, "admin", "another-admin-password")


async def test_a_plain_user_can_be_disabled_and_deleted_with_one_admin(
    client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]
) -> None:
    disabled = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"disabled": True}
    )
    deleted = await client.delete(f"/users/{user.id}", headers=admin_headers)

    assert disabled.status_code == 200
    assert deleted.status_code == 204


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("DELETE", None),
        ("PATCH", {"disabled": True}),
        ("PATCH", {"role": "user"}),
    ],
)
async def test_two_admins_removing_each_other_at_once_leave_one_admin(
    client: httpx.AsyncClient,
    db: AsyncSession,
    hashing: PasswordHashing,
    database: Database,
    method: str,
    body: dict[str, object] | None,
) -> None:
    first = await create_user(db, hashing, username="ann", role=UserRole.ADMIN)
    second = await create_user(db, hashing, username="ben", role=UserRole.ADMIN)
    first_headers = await login(client, "ann", USER_PASSWORD)
    second_headers = await login(client, "ben", USER_PASSWORD)

    responses = await asyncio.gather(
        client.request(method, f"/users/{second.id}", headers=first_headers, json=body),
        client.request(method, f"/users/{first.id}", headers=second_headers, json=body),
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] in {200, 204}
    # The loser saw the last admin (409), or came second and found itself
    # demoted (403) or its session ended (401).
    assert statuses[1] in {401, 403, 409}
    assert await enabled_admins(database) == 1


async def test_many_admins_demoting_everyone_at_once_leave_one_admin(
    client: httpx.AsyncClient,
    db: AsyncSession,
    hashing: PasswordHashing,
    database: Database,
) -> None:
    names = ["ann", "ben", "cid", "dot"]
    admins = [
        await create_user(db, hashing, username=name, role=UserRole.ADMIN)
        for name in names
    ]
    headers = [await login(client, name, USER_PASSWORD) for name in names]

    await asyncio.gather(
        *(
            client.patch(f"/users/{target.id}", headers=caller, json={"role": "user"})
            for caller in headers
            for target in admins
        )
    )

    assert await enabled_admins(database) == 1
