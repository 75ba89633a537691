import asyncio
from typing import Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from master_server.core.deps import get_database

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)

DATABASE_CHECK_TIMEOUT_SECONDS = 5.0


class HealthOk(BaseModel):
    status: Literal["ok"]


class HealthUnavailable(BaseModel):
    status: Literal["unavailable"]
    error: str
    code: Literal["database_unavailable"]


@router.get(
    "/healthz",
    response_model=HealthOk,
    responses={503: {"model": HealthUnavailable}},
)
async def healthz(request: Request) -> HealthOk | JSONResponse:
    """200 when the database answers, 503 when it does not."""
    database = get_database(request)
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_SECONDS):
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer means unhealthy
        log.warning("health.database_unavailable", error_type=type(exc).__name__)
        return JSONResponse(
            {
                "status": "unavailable",
                "error": "the database does not answer",
                "code": "database_unavailable",
            },
            status_code=503,
        )
    return HealthOk(status="ok")
