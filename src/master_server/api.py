"""Every feature's router, in the order the app mounts them."""

from fastapi import APIRouter

from master_server.auth.router import router as auth_router
from master_server.clients.router import router as clients_router
from master_server.commands.router import router as commands_router
from master_server.events.router import router as events_router
from master_server.events.router import write_router as event_writes_router
from master_server.health.router import router as health_router
from master_server.heartbeats.router import router as heartbeats_router
from master_server.heartbeats.router import write_router as heartbeat_writes_router
from master_server.provisioning.router import router as provisioning_router
from master_server.users.router import router as users_router

# The app includes each of these itself rather than one router holding them
# all: FastAPI matches included routers level by level, and one level less cut
# a third of the cost of routing a request in bench/run.
#
# A request is matched against the routes in this order, so the device writes,
# which are most of the traffic, come first.
routers: list[APIRouter] = [
    heartbeat_writes_router,
    event_writes_router,
    health_router,
    heartbeats_router,
    events_router,
    auth_router,
    users_router,
    # Before the clients router: /clients/register must not be read as a client id.
    provisioning_router,
    clients_router,
    commands_router,
]
