"""Fixtures for end-to-end tests: an HTTP client and a logged-in admin."""

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.operator import ADMIN, Operator, log_in
from tests.fixtures.server import ServerProcess


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def operator(server: ServerProcess, http: httpx.Client) -> Operator:
    """The first admin, bootstrapped with masterctl and logged in."""
    server.bootstrap_admin(*ADMIN)
    return Operator(http=http, headers=log_in(http, *ADMIN))
