"""`/live`, the liveness probe: 200 through an upstream outage and a sink outage, 503 only when the
pipeline is wedged (ledgers held, no commit for LIVENESS_STALL_S, nothing failing to explain it).

The probe counts a stall on ``ServiceView.clock``; the tests move that clock an hour on instead of
waiting, everything else being the real service over real sockets."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import trio

import cdp
from cdp._config import Config
from cdp.extract import Ledger, Row
from cdp.ops import ServiceView
from cdp.pipeline import PipelineStatistics
from cdp.sinks._postgres import PostgresSink
from cdp.upstream import BreakerState

from .helpers import refusing_endpoint
from .pg_server import PostgresServer

HOUR = 3600.0
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "health_port": 0, "health_host": "127.0.0.1",
        "worker_mode": "thread", "start_ledger": 2}  # fmt: skip


@attrs.frozen
class Wedging:
    """One row per ledger, except that ``at`` never returns until ``release`` is set (a worker stuck in
    a call that never ends: a deadlock, an infinite loop in an extension)."""

    at: int
    entered: threading.Event = attrs.field(factory=threading.Event, eq=False)
    release: threading.Event = attrs.field(factory=threading.Event, eq=False)
    name: str = "wedging"

    def process(self, ledger: Ledger) -> Sequence[Row]:
        if ledger.sequence == self.at:
            self.entered.set()
            self.release.wait()
        return [{"ledger_sequence": ledger.sequence}]


async def _probe(port: int) -> tuple[int, dict[str, Any], int]:
    """(/live status, its body, /health status)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        live = await client.get("/live")
        health = await client.get("/health")
    return live.status_code, live.json(), health.status_code


def _later(view: ServiceView) -> None:
    view.clock = lambda: trio.current_time() + HOUR


async def test_a_wedged_pipeline_fails_the_probe_once_stalled(upstream: Any) -> None:
    processor = Wedging(at=10)
    cfg = Config.from_mapping({"source_endpoint": await upstream(), **FAST, "liveness_stall_s": 60})
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial_serve(cfg, processor))
        await trio.to_thread.run_sync(processor.entered.wait)
        await handle.view.pipeline.wait_committed(9)
        status, body, _ = await _probe(handle.http_port)
        assert (200, True) == (status, body["live"])  # held, but not for long yet
        _later(handle.view)
        status, body, health = await _probe(handle.http_port)
        assert 503 == status
        assert body["reason"].startswith("wedged: ")
        assert "no commit for 3600s (LIVENESS_STALL_S=60)" in body["reason"]
        assert 200 == health  # /health has nothing to say against it: only /live sees a wedge
        processor.release.set()
        await handle.view.pipeline.wait_committed(12)
        handle.view.clock = trio.current_time
        status, body, _ = await _probe(handle.http_port)  # committing again: a commit is progress
        assert 200 == status, body
        handle.stop()


async def test_an_upstream_outage_is_not_a_wedge() -> None:
    """Nothing to connect to: the breaker opens and /health says unhealthy (503), /live stays 200."""
    with refusing_endpoint() as endpoint:
        cfg = Config.from_mapping({"source_endpoint": endpoint, **FAST, "breaker_failure_threshold": 2})
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial_serve(cfg, Wedging(at=0)))
            await handle.view.source.breaker.wait_state(BreakerState.OPEN)
            _later(handle.view)
            status, body, health = await _probe(handle.http_port)
            assert (200, 503) == (status, health)
            assert "idle" in body["reason"]
            handle.stop()


async def test_a_sink_outage_is_not_a_wedge(upstream: Any, postgres: PostgresServer, monkeypatch: Any) -> None:
    """The database goes down with ledgers streaming in: they are held while the sink retries, an hour
    of it on the probe's clock is still not a wedge; once it is back, all is committed."""
    failed = trio.Event()
    original = PostgresSink._failed

    def noted(self: PostgresSink, *args: Any) -> float:
        failed.set()
        return original(self, *args)

    monkeypatch.setattr(PostgresSink, "_failed", noted)
    dsn = postgres.create_database("liveness")
    cfg = Config.from_mapping({"source_endpoint": await upstream(rate=200), **FAST, "output": dsn,
                               "end_ledger": 200})  # fmt: skip
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(lambda task_status: cdp.serve(cfg, task_status=task_status))
        await handle.view.pipeline.wait_committed(10)
        await trio.to_thread.run_sync(postgres.stop)
        try:
            await failed.wait()
            stats: PipelineStatistics = handle.view.pipeline.statistics()
            assert stats.buffered_bytes > 0  # ledgers are held
            _later(handle.view)
            status, body, health = await _probe(handle.http_port)
            assert 200 == status, body
            assert body["reason"] == "the sink is failing: its retries hold the ledgers"
            assert 200 == health  # degraded or not, a sink outage is not the process's death either
        finally:
            await trio.to_thread.run_sync(postgres.start)
        with trio.fail_after(120):
            await handle.wait_done()
    assert handle.view.pipeline.statistics().last_committed_ledger == 200


def partial_serve(cfg: Config, processor: Any) -> Any:
    async def run(task_status: trio.TaskStatus[Any]) -> None:
        await cdp.serve(cfg, processor=processor, on_rows=lambda seq, rows: None, task_status=task_status)

    return run
