"""A one-line progress bar for range runs on a terminal: ledgers, rate, rows, ETA."""

from __future__ import annotations

from typing import IO, Protocol

import trio

from cdp.pipeline._pipeline import PipelineStatistics

WIDTH = 30  # characters of bar


class _HasStatistics(Protocol):
    def statistics(self) -> PipelineStatistics: ...


def render(done: int, total: int, rows: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("inf")
    filled = int(WIDTH * done / total) if total else WIDTH
    eta = "--:--" if left == float("inf") else f"{int(left // 60):02d}:{int(left % 60):02d}"
    bar = "#" * filled + "." * (WIDTH - filled)
    return f"[{bar}] {done}/{total} ledgers  {rate:.1f}/s  {rows} rows  ETA {eta}"


async def show_progress(pipeline: _HasStatistics, total: int, stream: IO[str], interval: float = 0.5) -> None:
    """Redraw the bar every ``interval`` seconds until cancelled; then end the line."""
    start = trio.current_time()
    try:
        while True:
            st = pipeline.statistics()
            stream.write("\r" + render(st.processed, total, st.rows, trio.current_time() - start))
            stream.flush()
            await trio.sleep(interval)
    finally:
        st = pipeline.statistics()
        stream.write("\r" + render(st.processed, total, st.rows, trio.current_time() - start) + "\n")
        stream.flush()
