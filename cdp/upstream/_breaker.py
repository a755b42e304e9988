"""Circuit breaker and full-jitter backoff that govern reconnects to the upstream."""

from __future__ import annotations

import enum
import random
from typing import Final

import attrs
import trio

from cdp._errors import UpstreamError
from cdp._watch import Watched


class BreakerState(enum.IntEnum):
    """Numeric values are what the ``circuit_breaker_state`` gauge exports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@attrs.frozen
class BreakerStatistics:
    state: BreakerState
    consecutive_failures: int
    total_failures: int
    times_opened: int


class CircuitBreaker:
    """Closed until ``threshold`` consecutive failures, then open for ``reset_timeout`` seconds,
    then half-open: one probe, which closes it on success or opens it again on failure."""

    def __init__(self, threshold: int, reset_timeout: float) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._state = Watched(BreakerState.CLOSED)
        self._opened_at = 0.0
        self._consecutive = 0
        self._total = 0
        self._times_opened = 0

    def _set(self, state: BreakerState) -> None:
        if state != self._state.value:
            self._state.set(state)

    async def wait_state(self, state: BreakerState) -> None:
        """Return once the breaker is in ``state`` (for tests and supervisors)."""
        await self._state.wait_until(lambda s: s == state)

    @property
    def state(self) -> BreakerState:
        return self._state.value

    def statistics(self) -> BreakerStatistics:
        return BreakerStatistics(self.state, self._consecutive, self._total, self._times_opened)

    async def wait_permitted(self) -> None:
        """Return when a connection attempt is allowed; while open, that is after the reset timeout."""
        if self.state == BreakerState.OPEN:
            await trio.sleep_until(self._opened_at + self.reset_timeout)
            self._set(BreakerState.HALF_OPEN)
        await trio.lowlevel.checkpoint()

    def record_success(self) -> None:
        self._consecutive = 0
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._consecutive += 1
        self._total += 1
        if self.state == BreakerState.HALF_OPEN or self._consecutive >= self.threshold:
            if self.state != BreakerState.OPEN:
                self._times_opened += 1
            self._set(BreakerState.OPEN)
            self._opened_at = trio.current_time()


def after_failure(breaker: CircuitBreaker, max_attempts: int, where: str, error: str) -> str:
    """Record a failed attempt to reach ``where``; what the log line should add about retrying (said once
    per outage: on its first failure).

    Raises:
        UpstreamError: ``max_attempts`` (CONNECT_MAX_ATTEMPTS; 0: no bound) attempts in a row have failed.
    """
    breaker.record_failure()
    return retry_note(breaker.statistics().consecutive_failures, max_attempts, where, error)


def retry_note(failed: int, max_attempts: int, where: str, error: str) -> str:
    """``after_failure`` for ``failed`` attempts in a row, where there is no breaker (a batch task).

    Raises:
        UpstreamError: as ``after_failure``.
    """
    if max_attempts and failed >= max_attempts:
        raise UpstreamError(
            f"{where}: {failed} attempt{'s' * (failed > 1)} in a row failed (CONNECT_MAX_ATTEMPTS={max_attempts}); "
            f"the last: {error}"
        )
    if failed > 1:
        return ""
    bound = f"at most CONNECT_MAX_ATTEMPTS={max_attempts} times" if max_attempts else "until it answers"
    return f"; {where} is retried through the circuit breaker {bound}"


@attrs.define
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``."""

    base: float
    cap: float
    rng: random.Random = attrs.field(factory=random.Random)
    attempt: int = 0

    MAX_EXPONENT: Final = 32  # keeps 2**attempt finite; the cap applies long before

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, self.MAX_EXPONENT))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
