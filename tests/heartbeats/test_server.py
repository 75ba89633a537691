"""Telemetry against a real `master-server` process, as devices reach it."""

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import func, insert, select

from master_server.core.db import create_engine
from master_server.core.security import TokenKind, hash_token, new_token
from master_server.models import Client, Event, Heartbeat
from master_server.models.base import utcnow
from tests.fixtures.database import make_settings
from tests.fixtures.server import ServerProcess

pytestmark = pytest.mark.e2e


async def test_a_real_server_takes_a_burst_of_200_heartbeats_and_events(
    server: ServerProcess, server_database_url: str
) -> None:
    engine = create_engine(make_settings(server_database_url))
    tokens = {uuid.uuid4(): new_token(TokenKind.CLIENT) for _ in range(20)}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Client),
                [
                    {
                        "id": client_id,
                        "name": f"pi-{n}",
                        "description": "",
                        "token_hash": hash_token(token),
                        "registered_at": utcnow(),
                        "created_at": utcnow(),
                    }
                    for n, (client_id, token) in enumerate(tokens.items())
                ],
            )

        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, limits=limits, timeout=30
        ) as http:
            requests = []
            for n in range(100):
                client_id, token = list(tokens.items())[n % 20]
                headers = {"Authorization": f"Bearer {token}"}
                requests.append(
                    http.post(
                        f"/clients/{client_id}/heartbeat",
                        json={"uptime_s": n},
                        headers=headers,
                    )
                )
                requests.append(
                    http.post(
                        f"/clients/{client_id}/events",
                        json={"level": "info", "message": f"burst {n}"},
                        headers=headers,
                    )
                )
            responses = await asyncio.gather(*requests)

        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * 100 + [201] * 100, [
            response.text for response in responses if response.is_error
        ][:3]
        async with engine.connect() as conn:
            for model in (Heartbeat, Event):
                count = await conn.scalar(select(func.count()).select_from(model))
                assert count == 100
            seen = await conn.scalar(
                select(func.count(func.distinct(Heartbeat.client_id)))
            )
            assert seen == 20
    finally:
        await engine.dispose()
