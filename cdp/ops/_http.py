"""``/health``, ``/ready`` and ``/metrics``: a Quart-Trio app served by Hypercorn inside our nursery.

Handlers only read statistics records the pipeline keeps up to date, so they never wait on
pipeline work (workers are separate processes) and answer in well under 100 ms under load.

Health rules: ``unhealthy`` (HTTP 503) when the circuit breaker is open or the service has
failed; ``degraded`` when the breaker is half-open, the source is reconnecting, or the last
committed ledger took more than ``LAG_DEGRADED_S`` from receipt to commit; ``healthy`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response
from quart_trio import QuartTrio

from cdp._errors import CdpError, find_os_error
from cdp._version import __version__
from cdp.upstream._breaker import BreakerState

LAG_DEGRADED_S: Final = 30.0  # receipt to commit; pubnet closes a ledger every ~6 s, so 5 behind


class ServiceView:
    """What the HTTP handlers read: callables returning the live statistics records."""

    def __init__(self, source: Any, pipeline: Any, sink_name: str, metrics: Any) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sink_name = sink_name
        self.metrics = metrics
        self.started = time.monotonic()
        self.fatal_error: str | None = None
        self.sink_error: str | None = None

    def health(self) -> tuple[str, dict[str, Any]]:
        src = self.source.statistics()
        pipe = self.pipeline.statistics()
        now = _now()
        breaker = src.breaker.state
        source_ok = src.connected or pipe.finished
        lag = pipe.processing_lag_s
        components = {
            "data_source": {
                "name": "data_source",
                "healthy": source_ok and breaker != BreakerState.OPEN,
                "last_check": now,
                "metrics": {
                    "connected": src.connected,
                    "endpoint": src.endpoint,
                    "breaker_state": breaker.name.lower(),
                    "consecutive_failures": src.breaker.consecutive_failures,
                    "ledgers_received": src.ledgers_received,
                    "bytes_received": src.bytes_received,
                    "ingest_rate": round(src.ingest_rate, 3),
                    "last_sequence": src.last_sequence,
                    "reconnects": src.reconnects,
                    "gaps": src.gaps,
                    "duplicates": src.duplicates,
                },
            },
            "stream_manager": {
                "name": "stream_manager",
                "healthy": self.fatal_error is None,
                "last_check": now,
                "metrics": {
                    "processed": pipe.processed,
                    "rows": pipe.rows,
                    "errors": pipe.errors,
                    "dead_lettered": pipe.dead_lettered,
                    "queue_depth": pipe.queue_depth,
                    "reorder_window": pipe.reorder_window,
                    "reorder_in_use": pipe.reorder_in_use,
                    "processing_lag": None if lag is None else round(lag, 3),
                    "last_committed_ledger": pipe.last_committed_ledger,
                },
            },
            "sink": {
                "name": "sink",
                "healthy": self.sink_error is None,
                "last_check": now,
                "metrics": {"kind": self.sink_name, "rows_written": pipe.rows},
            },
        }
        for name, error in (
            ("data_source", src.last_error),
            ("stream_manager", self.fatal_error),
            ("sink", self.sink_error),
        ):
            if error:
                components[name]["last_error"] = error
        if self.fatal_error or breaker == BreakerState.OPEN:
            status = "unhealthy"
        elif breaker == BreakerState.HALF_OPEN or not source_ok or (lag is not None and lag > LAG_DEGRADED_S):
            status = "degraded"
        else:
            status = "healthy"
        for name, comp in components.items():
            self.metrics.component_healthy.labels(name).set(1 if comp["healthy"] else 0)
        return status, components

    def ready(self) -> bool:
        src = self.source.statistics()
        pipe = self.pipeline.statistics()
        return bool(src.connected and pipe.last_committed_ledger is not None and self.fatal_error is None)

    def refresh_metrics(self) -> None:
        src = self.source.statistics()
        pipe = self.pipeline.statistics()
        m = self.metrics
        m.sync_counter(m.ledgers_received, "received", src.ledgers_received)
        m.sync_counter(m.bytes_received, "bytes", src.bytes_received)
        m.sync_counter(m.reconnects, "reconnects", src.reconnects)
        m.sync_counter(m.gaps, "gaps", src.gaps)
        m.sync_counter(m.duplicates, "duplicates", src.duplicates)
        for kind, count in self.source.failures_by_kind.items():
            m.sync_counter(m.processing_errors.labels(f"upstream_{kind}"), f"fail_{kind}", count)
        m.sync_counter(m.processing_errors.labels("sequence_mismatch"), "mismatch", src.sequence_mismatches)
        m.ingest_rate.set(src.ingest_rate)
        m.queue_depth.set(pipe.queue_depth)
        m.circuit_breaker_state.set(int(src.breaker.state))
        if src.last_sequence is not None:
            m.current_ledger.set(src.last_sequence)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_app(view: ServiceView) -> QuartTrio:
    app = QuartTrio("cdp")

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        status, components = view.health()
        body = {
            "status": status,
            "version": __version__,
            "uptime": round(time.monotonic() - view.started, 3),
            "timestamp": _now(),
            "components": components,
        }
        return body, 503 if status == "unhealthy" else 200

    @app.get("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        ok = view.ready()
        return {"ready": ok}, 200 if ok else 503

    @app.get("/metrics")
    async def metrics() -> Response:
        view.refresh_metrics()
        view.health()  # keeps component_healthy current
        return Response(view.metrics.exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def serve_http(
    app: QuartTrio,
    host: str,
    port: int,
    shutdown: Callable[[], Any],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown`` returns; reports the bound port."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    async def started(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown, task_status=task_status)

    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(started)
        except (OSError, BaseExceptionGroup) as exc:
            error = find_os_error(exc)
            if error is None:
                raise
            raise CdpError(f"HEALTH_PORT={port}: cannot listen on {host}:{port}: {error.strerror or error}") from None
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
