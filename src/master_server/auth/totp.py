"""RFC 6238 TOTP (SHA-1, 6 digits, 30 s) with a one-step window each way.

A code is matched to its time step, and the caller records the step: a step at
or before the last accepted one is never accepted again, which rules out
replaying a code (and any older code) once it has been used.
"""

import hmac
import time
from urllib.parse import quote

import pyotp

DIGITS = 6
STEP_SECONDS = 30
WINDOW_STEPS = 1
SECRET_LENGTH = 32  # base32 characters: 160 bits


def new_secret() -> str:
    return pyotp.random_base32(length=SECRET_LENGTH)


def time_step(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // STEP_SECONDS)


def code_at_step(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def match_step(
    secret: str, code: str, *, last_step: int | None, at: float | None = None
) -> int | None:
    """The time step `code` belongs to, if it is in the window and not yet used."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = time_step(at)
    for step in range(now - WINDOW_STEPS, now + WINDOW_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(code_at_step(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, *, issuer: str, account: str) -> str:
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    return (
        f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer, safe='')}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    )
