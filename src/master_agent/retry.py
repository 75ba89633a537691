"""Exponential backoff with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads
a fleet's retries out, so clients that lost the server at the same moment do
not all come back at the same moment.
"""

import random

# 2**30 seconds is far beyond any sensible cap; stopping the exponent there
# keeps the arithmetic finite however long an outage lasts.
_MAX_EXPONENT = 30


class Backoff:
    def __init__(
        self,
        base_seconds: float = 1.0,
        max_seconds: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if base_seconds <= 0 or max_seconds < base_seconds:
            raise ValueError("need 0 < base_seconds <= max_seconds")
        self._base_seconds = base_seconds
        self._max_seconds = max_seconds
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def ceiling(self) -> float:
        """The largest delay the next call to `next_delay` can return."""
        exponent = min(self._attempt, _MAX_EXPONENT)
        return min(self._max_seconds, self._base_seconds * 2.0**exponent)

    def next_delay(self, at_least_seconds: float = 0.0) -> float:
        """The delay before the next retry; it grows with each call until `reset`.

        ``at_least_seconds`` honours a server's Retry-After, within the cap.
        """
        delay = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return min(self._max_seconds, max(delay, at_least_seconds))

    def reset(self) -> None:
        self._attempt = 0
