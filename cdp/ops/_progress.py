"""Progress of range runs: a moving-rate ETA, and a one-line bar on a terminal (ledgers, rate, rows, ETA)."""

from __future__ import annotations

import collections
from typing import IO, Protocol

import trio

from cdp.pipeline._pipeline import PipelineStatistics

WIDTH = 30  # characters of bar


class _HasStatistics(Protocol):
    def statistics(self) -> PipelineStatistics: ...


class RateEstimate:
    """Ledgers per second over the last ``window_s`` seconds, counted from the first completion on: the
    start-up before it (a cluster starting, imports, the first fetches) says nothing about the rate to
    come, and the moving window follows a rate that changes (ledgers grow over the years)."""

    def __init__(self, total: int, window_s: float = 60.0) -> None:
        self.total = total
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, now: float, done: int) -> None:
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """None until two completions are apart in time."""
        if len(self._samples) < 2 or self._samples[-1][0] <= self._samples[0][0]:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0)

    @property
    def eta_s(self) -> float | None:
        rate, done = self.rate, self._samples[-1][1] if self._samples else 0
        if done >= self.total:
            return 0.0
        return (self.total - done) / rate if rate else None

    def fields(self) -> str:
        """``ledgers_per_s=... eta_s=...`` for a log line (``?`` while unknown)."""
        rate, eta = self.rate, self.eta_s
        return f"ledgers_per_s={'?' if rate is None else f'{rate:.1f}'} eta_s={'?' if eta is None else f'{eta:.0f}'}"


def bar(done: int, total: int) -> str:
    filled = int(WIDTH * done / total) if total else WIDTH
    return "[" + "#" * filled + "." * (WIDTH - filled) + "]"


def eta_text(seconds: float | None) -> str:
    return "--:--" if seconds is None else f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def render(done: int, total: int, rows: int, estimate: RateEstimate) -> str:
    rate, eta = estimate.rate, eta_text(estimate.eta_s)
    return (
        f"{bar(done, total)} {done}/{total} ledgers  {'-' if rate is None else f'{rate:.1f}'}/s  {rows} rows  ETA {eta}"
    )


async def show_progress(pipeline: _HasStatistics, total: int, stream: IO[str], interval: float = 0.5) -> None:
    """Redraw the bar every ``interval`` seconds until cancelled; then end the line."""
    estimate = RateEstimate(total)

    def draw(end: str) -> None:
        st = pipeline.statistics()
        if st.processed:
            estimate.update(trio.current_time(), st.processed)
        stream.write("\r" + render(st.processed, total, st.rows, estimate) + end)
        stream.flush()

    try:
        while True:
            draw("")
            await trio.sleep(interval)
    finally:
        draw("\n")
