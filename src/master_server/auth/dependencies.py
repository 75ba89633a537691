"""Who is calling: bearer tokens resolved to a user session or a client.

The two kinds of token are told apart by their prefix and are never
interchangeable: a client token on a user endpoint is a 401, and so is a
session token on a device-only endpoint.
"""

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from master_server.auth import service as auth_service
from master_server.auth.errors import InvalidToken, WrongTokenKind
from master_server.auth.service import AuthenticatedUser
from master_server.core.deps import DbSession, get_database
from master_server.core.errors import Forbidden, NotAuthenticated
from master_server.core.security import TokenKind, hash_token, token_kind
from master_server.models import Client, UserRole

# auto_error=False: a missing header is our 401 in our error shape, not a 403.
bearer_scheme = HTTPBearer(auto_error=False, description="Session or client token")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


# async: a plain def dependency would be run in a worker thread on every call.
async def bearer_token(credentials: Credentials) -> str:
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("missing bearer token")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def require_token_kind(
    token: str, kinds: Collection[TokenKind], name: str
) -> TokenKind:
    """The token's kind, one of `kinds`; refused before anything is looked up.

    A token of another of our kinds is a `WrongTokenKind`, which tells the
    caller what to send instead; one of no kind of ours is simply not a
    token we issued (`InvalidToken`), as an unknown token of the right kind
    will be once looked up.
    """
    found = token_kind(token)
    if found is None:
        raise InvalidToken
    if found not in kinds:
        raise WrongTokenKind(f"this endpoint needs a {name}")
    return found


async def current_user(db: DbSession, token: BearerToken) -> AuthenticatedUser:
    require_token_kind(token, {TokenKind.SESSION}, "user session token")
    return await auth_service.resolve_session(db, token)


CurrentUser = Annotated[AuthenticatedUser, Depends(current_user)]


async def current_admin(authenticated: CurrentUser) -> AuthenticatedUser:
    if authenticated.user.role != UserRole.ADMIN:
        raise Forbidden("this needs an admin")
    return authenticated


CurrentAdmin = Annotated[AuthenticatedUser, Depends(current_admin)]


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """A device, authenticated by its client token."""

    client_id: uuid.UUID


async def resolve_client_token(request: Request, token: str) -> AuthenticatedClient:
    """The client a token belongs to; one indexed Core SELECT, no ORM session.

    Only the hash is stored, and it is unique, so the lookup is by equality on
    the hash: the token itself is never compared.
    """
    database = get_database(request)
    async with database.engine.connect() as connection:
        client_id = await connection.scalar(
            select(Client.id).where(Client.token_hash == hash_token(token))
        )
    if client_id is None:
        raise InvalidToken
    return AuthenticatedClient(client_id=client_id)


async def current_client(request: Request, token: BearerToken) -> AuthenticatedClient:
    require_token_kind(token, {TokenKind.CLIENT}, "client token")
    return await resolve_client_token(request, token)


CurrentClient = Annotated[AuthenticatedClient, Depends(current_client)]

Caller = AuthenticatedUser | AuthenticatedClient


async def current_caller(request: Request, db: DbSession, token: BearerToken) -> Caller:
    """A user or a client, for the endpoints both may call."""
    kind = require_token_kind(
        token, {TokenKind.SESSION, TokenKind.CLIENT}, "user session or client token"
    )
    if kind is TokenKind.SESSION:
        return await auth_service.resolve_session(db, token)
    return await resolve_client_token(request, token)


CurrentCaller = Annotated[Caller, Depends(current_caller)]
