"""Every feature's router, mounted in one place."""

from fastapi import APIRouter

from master_server.auth.router import router as auth_router
from master_server.clients.router import router as clients_router
from master_server.commands.router import router as commands_router
from master_server.events.router import router as events_router
from master_server.events.router import write_router as event_writes_router
from master_server.health.router import router as health_router
from master_server.heartbeats.router import baseline_router
from master_server.heartbeats.router import router as heartbeats_router
from master_server.heartbeats.router import write_router as heartbeat_writes_router
from master_server.provisioning.router import router as provisioning_router
from master_server.users.router import router as users_router

api_router = APIRouter()
api_router.include_router(health_router)
# The telemetry routes first: they take most of the traffic, and a request is
# matched against the routes in the order they were mounted.
api_router.include_router(heartbeat_writes_router)
api_router.include_router(event_writes_router)
api_router.include_router(heartbeats_router)
api_router.include_router(events_router)
api_router.include_router(baseline_router)
api_router.include_router(auth_router)
api_router.include_router(users_router)
# Before the clients router: /clients/register must not be read as a client id.
api_router.include_router(provisioning_router)
api_router.include_router(clients_router)
api_router.include_router(commands_router)
