"""What every source reports: its statistics record and the smoothed ingest rate (no I/O, no asyncio)."""

from __future__ import annotations

import attrs

from ._breaker import BreakerStatistics


@attrs.define
class RateMeter:
    """Events per second, smoothed over ~5 s (the ``ingest_rate`` gauge)."""

    rate: float = 0.0
    last: float | None = None

    def tick(self, now: float) -> None:
        if self.last is not None:
            dt = max(now - self.last, 1e-6)
            self.rate += min(1.0, dt / 5.0) * (1.0 / dt - self.rate)
        self.last = now


@attrs.frozen
class SourceStatistics:
    connected: bool
    endpoint: str
    ledgers_received: int
    bytes_received: int
    ingest_rate: float  # ledgers per second, smoothed
    last_sequence: int | None
    next_sequence: int
    reconnects: int
    gaps: int
    duplicates: int
    sequence_mismatches: int
    failures_by_kind: dict[str, int]
    last_error: str | None
    last_message_at: float | None  # trio clock
    breaker: BreakerStatistics
    network: str | None = None  # the passphrase in force: NETWORK_PASSPHRASE's, or the one detected
    network_verified_by: int | None = None  # the ledger whose transaction hashes proved it
    call_seconds: float | None = None  # how long the oldest read in flight has been running (datastores)
    call_timeout_s: float = 0.0  # past this, /health calls that read stuck
