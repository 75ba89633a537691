"""Secrets: opaque tokens, their hashes, and password hashing.

Tokens are 32 random bytes behind a prefix that tells their kind apart at a
glance (and lets secret scanners find a leaked one). Only the SHA-256 of a
token is stored; the token itself is shown once and never logged.
"""

import hashlib
import hmac
import secrets
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from master_server.core.config import Settings


class TokenKind(StrEnum):
    SESSION = "mss_"
    CLIENT = "msc_"
    PROVISION_KEY = "msp_"


def new_token(kind: TokenKind) -> str:
    return f"{kind.value}{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# Every prefix is four characters, so a token's kind is one dictionary lookup.
_PREFIX_LENGTH = 4
_KINDS_BY_PREFIX = {kind.value: kind for kind in TokenKind}
assert all(len(prefix) == _PREFIX_LENGTH for prefix in _KINDS_BY_PREFIX)


def token_kind(token: str) -> TokenKind | None:
    return _KINDS_BY_PREFIX.get(token[:_PREFIX_LENGTH])


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


class PasswordHashing:
    """Argon2id with the configured cost, and a dummy hash for unknown users."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        )
        # Verifying against this costs what a real check costs, so a login for
        # an unknown username takes as long as one with a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
