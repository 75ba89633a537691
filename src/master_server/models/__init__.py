"""Every table, imported here so Alembic and the app see one metadata."""

from master_server.models.base import Base
from master_server.models.client import Client
from master_server.models.command import Command, CommandStatus
from master_server.models.event import Event, EventLevel
from master_server.models.heartbeat import Heartbeat
from master_server.models.session import Session
from master_server.models.user import User, UserRole
from master_server.models.user_client import UserClient

__all__ = [
    "Base",
    "Client",
    "Command",
    "CommandStatus",
    "Event",
    "EventLevel",
    "Heartbeat",
    "Session",
    "User",
    "UserClient",
    "UserRole",
]
