"""Helpers for the auth tests: live TOTP codes, and the type of `app_client`."""

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

from master_server.auth import totp

AppClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def current_step() -> int:
    """The current TOTP step, waiting out the last second before a new one.

    Tests that use the window's edges (now ± 1) would fail if the step changed
    between making a code and the server checking it.
    """
    if time.time() % totp.STEP_SECONDS > totp.STEP_SECONDS - 1.5:
        time.sleep(1.6)
    return totp.time_step()


def code_for(secret: str, offset: int = 0) -> str:
    return totp.code_at_step(secret, current_step() + offset)
