"""Latency histograms kept as plain counts, so a collector can read them at scrape time."""

from __future__ import annotations

import bisect
from typing import Final

import attrs

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@attrs.frozen
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last bound is +Inf), the sum and the count."""

    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), self._sum, running)
