"""RFC 6238 codes, the one-step window and the otpauth URI, without the API."""

import base64
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from master_server.auth import totp

# RFC 6238, appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()

# (Unix time, the RFC's 8-digit SHA-1 value). Our codes have 6 digits, which
# are the last 6 of the same truncated HOTP value.
RFC_SHA1_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("at", "rfc_code"), RFC_SHA1_VECTORS)
def test_codes_match_the_rfc_6238_sha1_test_vectors(at: int, rfc_code: str) -> None:
    assert totp.code_at_step(RFC_SECRET, totp.time_step(at)) == rfc_code[-6:]


@pytest.mark.parametrize(("at", "rfc_code"), RFC_SHA1_VECTORS)
def test_an_rfc_code_is_matched_to_its_time_step(at: int, rfc_code: str) -> None:
    step = totp.match_step(RFC_SECRET, rfc_code[-6:], last_step=None, at=at)

    assert step == at // 30


def test_time_steps_are_thirty_seconds_long() -> None:
    assert totp.time_step(0) == totp.time_step(29.999) == 0
    assert totp.time_step(30) == 1


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_a_code_from_the_step_before_or_after_is_accepted(offset: int) -> None:
    now = 1_700_000_000.0
    step = totp.time_step(now) + offset
    code = totp.code_at_step(RFC_SECRET, step)

    assert totp.match_step(RFC_SECRET, code, last_step=None, at=now) == step


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_a_code_two_or_more_steps_away_is_rejected(offset: int) -> None:
    now = 1_700_000_000.0
    code = totp.code_at_step(RFC_SECRET, totp.time_step(now) + offset)

    assert totp.match_step(RFC_SECRET, code, last_step=None, at=now) is None


def test_a_code_at_or_before_the_last_accepted_step_is_rejected() -> None:
    now = 1_700_000_000.0
    step = totp.time_step(now)

    for used in (step, step + 1):
        code = totp.code_at_step(RFC_SECRET, step)
        assert totp.match_step(RFC_SECRET, code, last_step=used, at=now) is None
    code = totp.code_at_step(RFC_SECRET, step + 1)
    assert totp.match_step(RFC_SECRET, code, last_step=step, at=now) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", "١٢٣٤٥٦", " 12345"])
def test_a_code_that_is_not_six_ascii_digits_is_rejected(code: str) -> None:
    assert totp.match_step(RFC_SECRET, code, last_step=None) is None


def test_a_new_secret_is_160_bits_of_upper_case_base32() -> None:
    secrets = {totp.new_secret() for _ in range(50)}

    assert len(secrets) == 50
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32,}", secret)
        assert len(base64.b32decode(secret)) * 8 >= 160


def test_the_otpauth_uri_percent_encodes_issuer_and_account() -> None:
    uri = totp.provisioning_uri(
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        issuer="Acme Fleet: Prod",
        account="ops+1@example.com",
    )

    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert parts.path == "/Acme%20Fleet%3A%20Prod:ops%2B1%40example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == ["JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"]
    assert "issuer=Acme%20Fleet%3A%20Prod" in parts.query
    assert query["algorithm"] == ["SHA1"]
    assert query["digits"] == ["6"]
    assert query["period"] == ["30"]
    assert "+" not in uri
