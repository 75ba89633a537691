"""GET /healthz, and what every endpoint answers while the database is away."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from master_server.app import create_app
from tests.fixtures.database import make_settings
from tests.fixtures.server import free_port


async def test_healthz_is_ok_when_the_database_answers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/healthz", headers={"Authorization": "Bearer mss_bogus"}
    )

    assert response.status_code == 200


def unreachable_urls(tmp_path: Path) -> dict[str, str]:
    return {
        "postgresql": f"postgresql://postgres@127.0.0.1:{free_port()}/master",
        "sqlite": f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'master.db'}",
    }


@pytest.fixture(params=["postgresql", "sqlite"])
async def unreachable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose database cannot be reached: a closed port, a missing dir."""
    url = unreachable_urls(tmp_path)[request.param]
    application = create_app(make_settings(url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_healthz_is_503_when_the_database_does_not_answer(
    unreachable: httpx.AsyncClient,
) -> None:
    response = await unreachable.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "error": "the database does not answer",
        "code": "database_unavailable",
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/auth/login", {"username": "alice", "password": "password-1"}),
        ("GET", "/auth/me", None),
        ("GET", "/users", None),
    ],
)
async def test_endpoints_answer_503_not_500_while_the_database_is_away(
    unreachable: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await unreachable.request(
        method, path, json=body, headers={"Authorization": "Bearer mss_whatever"}
    )

    assert response.status_code == 503
    assert response.json() == {
        "error": "the database is unavailable, retry later",
        "code": "database_unavailable",
    }
    assert response.headers["retry-after"] == "1"
