import random

import pytest

from master_agent.retry import Backoff


def test_delays_stay_between_zero_and_a_doubling_ceiling() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=60.0, rng=random.Random(1))

    for attempt in range(12):
        ceiling = min(60.0, 2.0**attempt)
        assert backoff.ceiling() == ceiling
        assert 0.0 <= backoff.next_delay() <= ceiling


def test_delays_never_exceed_the_cap_however_long_the_outage() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=60.0, rng=random.Random(2))

    delays = [backoff.next_delay() for _ in range(2000)]

    assert max(delays) <= 60.0
    assert backoff.ceiling() == 60.0


def test_delays_are_jittered_rather_than_fixed() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=8.0, rng=random.Random(3))
    for _ in range(5):
        backoff.next_delay()

    delays = {backoff.next_delay() for _ in range(20)}

    assert len(delays) == 20


def test_reset_starts_again_from_the_base_delay() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=60.0, rng=random.Random(4))
    for _ in range(10):
        backoff.next_delay()

    backoff.reset()

    assert backoff.ceiling() == 1.0
    assert backoff.next_delay() <= 1.0


def test_a_retry_after_hint_is_honoured_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=10.0, rng=random.Random(5))

    assert backoff.next_delay(at_least_seconds=4.0) >= 4.0
    assert backoff.next_delay(at_least_seconds=500.0) == 10.0


def test_a_cap_below_the_base_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base_seconds=5.0, max_seconds=1.0)
