"""``/health``, ``/ready``, ``/live`` and ``/metrics``: a Quart-Trio app served by Hypercorn inside our nursery.

Handlers only read the components' statistics records, so they never wait on pipeline work
(workers are separate processes) and answer in well under 100 ms under load.

Health rules: ``unhealthy`` (HTTP 503) when the circuit breaker is open or the service has
failed; ``degraded`` when the breaker is half-open, the source is reconnecting, or the last
committed ledger took more than ``LAG_DEGRADED_S`` from receipt to commit; ``healthy`` otherwise.
``/health`` is for people and dashboards; ``/live`` answers only "is this process wedged?" (a
liveness probe on ``/health`` would restart a healthy pod on every upstream outage).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from quart import Response
from quart_trio import QuartTrio

from cdp._errors import redact
from cdp._net import bind_tcp_or_fail
from cdp._validators import network_name
from cdp._version import __version__
from cdp.pipeline import PipelineStatistics
from cdp.upstream import BreakerState, SourceStatistics
from cdp.xdr._walker import WALKER

from ._http_server import serve_capped

if TYPE_CHECKING:
    from cdp.sinks._flight_hub import FlightStatistics
from ._metrics import exposition, open_registry

LAG_DEGRADED_S: Final = 30.0  # receipt to commit; pubnet closes a ledger every ~6 s, so 5 behind
GRACEFUL_TIMEOUT_S: Final = 1.0  # how long an in-flight request may take once the service stops


class _HasSourceStatistics(Protocol):
    def statistics(self) -> SourceStatistics: ...


class _HasPipelineStatistics(Protocol):
    def statistics(self) -> PipelineStatistics: ...


class _HasFlightStatistics(Protocol):
    def statistics(self) -> FlightStatistics: ...


@attrs.define(eq=False)
class ServiceView:
    """What the HTTP handlers read: the live components and how the service is doing."""

    source: _HasSourceStatistics
    pipeline: _HasPipelineStatistics
    sink_name: str
    flight: _HasFlightStatistics | None = None
    sink_stats: Callable[[], Any] | None = None  # a sink's own statistics (PostgreSQL: connection, retries)
    liveness_stall_s: float = 600.0  # LIVENESS_STALL_S
    end_ledger: int | None = None  # END_LEDGER: where a bounded run stops (a metric, for alerts)
    clock: Callable[[], float] = trio.current_time  # what /live counts a stall by (tests move it on)
    started: float = attrs.field(factory=time.monotonic)
    running: bool = True
    fatal_error: str | None = None
    sink_error: str | None = None

    def health(self) -> tuple[str, dict[str, Any]]:
        """The overall status and each component's; reads records only, changes nothing."""
        src = self.source.statistics()
        pipe = self.pipeline.statistics()
        now = _now()
        breaker = src.breaker.state
        source_ok = src.connected or pipe.finished
        lag = pipe.processing_lag_s
        components: dict[str, dict[str, Any]] = {
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
                    "network": None if src.network is None else network_name(src.network),
                    "network_verified_by_ledger": src.network_verified_by,
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
                    "buffered_bytes": pipe.buffered_bytes,
                    "reorder_window": pipe.reorder_window,
                    "reorder_in_use": pipe.reorder_in_use,
                    "processing_lag": None if lag is None else round(lag, 3),
                    "last_committed_ledger": pipe.last_committed_ledger,
                    "xdr_walker": WALKER,
                },
            },
            "sink": {
                "name": "sink",
                "healthy": self.sink_error is None,
                "last_check": now,
                "metrics": {"kind": self.sink_name, "rows_written": pipe.rows},
            },
        }
        sink_error = self.sink_error
        stuck = False
        source_error = src.last_error
        if src.call_seconds is not None:  # a datastore read in flight: how long, and whether past its timeout
            components["data_source"]["metrics"]["call_seconds"] = round(src.call_seconds, 3)
            if src.call_seconds > src.call_timeout_s:
                components["data_source"]["healthy"], stuck = False, True
                source_error = f"a read has been running {src.call_seconds:.0f}s, past DATASTORE_TIMEOUT_S"
        if self.sink_stats is not None:
            st = self.sink_stats()
            components["sink"]["metrics"].update(connected=st.connected, reconnects=st.reconnects, retries=st.retries)
            components["sink"]["healthy"] = sink_error is None and st.last_error is None
            sink_error = sink_error or st.last_error
            started = getattr(st, "call_started_at", None)
            if started is not None:  # a commit in flight: say how long, and whether past its timeouts
                call_s = time.monotonic() - started
                components["sink"]["metrics"]["call_seconds"] = round(call_s, 3)
                if call_s > st.call_timeout_s:
                    components["sink"]["healthy"], stuck = False, True
                    sink_error = sink_error or f"a commit has been running {call_s:.0f}s, past its timeouts"
        if self.flight is not None:
            fl = self.flight.statistics()
            components["flight"] = {
                "name": "flight",
                "healthy": True,
                "last_check": now,
                "metrics": {
                    "clients": fl.clients,
                    "lagging": fl.lagging,
                    "replaying": fl.replaying,
                    "overflows": fl.overflows,
                    "disconnected": fl.disconnected,
                    "batches_sent": fl.batches_sent,
                    "rows_sent": fl.rows_sent,
                },
            }
        for name, error in (
            ("data_source", source_error),
            ("stream_manager", self.fatal_error),
            ("sink", sink_error),
        ):
            if error:
                components[name]["last_error"] = error
        if self.fatal_error or breaker == BreakerState.OPEN:
            status = "unhealthy"
        elif breaker == BreakerState.HALF_OPEN or not source_ok or stuck or (lag is not None and lag > LAG_DEGRADED_S):
            status = "degraded"
        else:
            status = "healthy"
        return status, _redacted(components)

    def live(self, now: float) -> tuple[bool, str]:
        """Whether the process is doing its job or waiting out an outage (True), or is wedged: ledgers
        held with no commit for ``liveness_stall_s`` and neither the sink nor a stop to explain it.
        ``now`` is the Trio clock. An upstream outage holds no ledger, so it never counts."""
        pipe = self.pipeline.statistics()
        if pipe.finished or not (pipe.buffered_bytes or pipe.reorder_in_use or pipe.queue_depth):
            return True, "idle: no ledger held"
        stalled = now - (pipe.progress_at if pipe.progress_at is not None else now)
        if stalled <= self.liveness_stall_s:
            return True, "committing"
        if self.sink_error or (self.sink_stats is not None and self.sink_stats().last_error is not None):
            return True, "the sink is failing: its retries hold the ledgers"
        held = pipe.reorder_in_use + pipe.queue_depth
        return False, (f"wedged: {held} ledgers held, no commit for {stalled:.0f}s "
                       f"(LIVENESS_STALL_S={self.liveness_stall_s:g}) and no outage to explain it")  # fmt: skip

    def ready(self) -> bool:
        src = self.source.statistics()
        pipe = self.pipeline.statistics()
        return bool(src.connected and pipe.last_committed_ledger is not None and self.fatal_error is None)


def _redacted(value: Any) -> Any:
    """Every string of a ``/health`` document without passwords (an error may quote a DSN)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_app(view: ServiceView) -> QuartTrio:
    app = QuartTrio("cdp")
    registry = open_registry(view)

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

    @app.get("/live")
    async def live() -> tuple[dict[str, Any], int]:
        ok, why = view.live(view.clock())
        return {"live": ok, "reason": why}, 200 if ok else 503

    @app.get("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        ok = view.ready()
        return {"ready": ok}, 200 if ok else 503

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(exposition(registry), content_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket ourselves and hand Hypercorn its descriptor: a bind failure is then one clear
    error with nothing leaked (Hypercorn's own binding leaves the failed socket open)."""
    return bind_tcp_or_fail(host, port, "HEALTH_HOST", "HEALTH_PORT")


async def serve_http(
    app: QuartTrio,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    *,
    max_connections: int = 64,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, then let requests in flight finish
    (``GRACEFUL_TIMEOUT_S``); at most ``max_connections`` are open at once. Reports the bound port.

    Raises:
        ConfigError: ``host`` is not a local address.
        CdpError: the port cannot be bound, naming host, port and reason.
    """
    sock = _listening_socket(host, port)
    bound = int(sock.getsockname()[1])
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_capped, app, config, sock, max_connections, shutdown_trigger)
            task_status.started(bound)
    finally:
        sock.close()
