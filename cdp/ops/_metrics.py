"""Prometheus series, read from the components' ``statistics()`` records at scrape time.

Nothing in the pipeline or the source touches a metric: they keep their own counts, and this
collector turns one consistent set of records into the ``contract_data_processor_`` series
whenever ``/metrics`` is scraped. The registry is the service's own (no global state).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cdp.pipeline import HistogramSnapshot

    from ._http import ServiceView

PREFIX: Final = "contract_data_processor"


def _n(name: str) -> str:
    return f"{PREFIX}_{name}"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(_n(name), doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(_n(name), doc, value=value)


def _histogram(name: str, doc: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count) for bound, count in snap.buckets]
    return HistogramMetricFamily(_n(name), doc, buckets=buckets, sum_value=snap.total)


class ServiceCollector(Collector):
    """Every series of the service, from ``view``'s records."""

    def __init__(self, view: ServiceView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        src = view.source.statistics()
        pipe = view.pipeline.statistics()
        _, components = view.health()
        yield _gauge("up", "1 while the service runs", 1 if view.running else 0)
        healthy = GaugeMetricFamily(_n("component_healthy"), "1 if the component is healthy", labels=["component"])
        for name, component in components.items():
            healthy.add_metric([name], 1 if component["healthy"] else 0)
        yield healthy
        yield _counter("ledgers_received", "Ledgers received from upstream", src.ledgers_received)
        yield _counter("bytes_received", "LedgerCloseMeta bytes received", src.bytes_received)
        yield _gauge("ingest_rate", "Ledgers per second from upstream, smoothed", src.ingest_rate)
        yield _counter("ledgers_processed", "Ledgers committed", pipe.processed)
        yield _counter("contracts_found", "Rows written", pipe.rows)
        errors = CounterMetricFamily(_n("processing_errors"), "Errors by kind", labels=["kind"])
        errors.add_metric(["bad_ledger"], pipe.errors)
        errors.add_metric(["sequence_mismatch"], src.sequence_mismatches)
        for kind, count in sorted(src.failures_by_kind.items()):
            errors.add_metric([f"upstream_{kind}"], count)
        yield errors
        processor_errors = CounterMetricFamily(
            _n("processor_errors"), "Ledgers a processor failed on", labels=["processor"]
        )
        processor_errors.add_metric([pipe.processor], pipe.errors)
        yield processor_errors
        events = CounterMetricFamily(
            _n("processor_events"), "Processor events, e.g. fast_path_fallback", labels=["processor", "event"]
        )
        for event, count in sorted(pipe.processor_events.items()):
            events.add_metric([pipe.processor, event], count)
        yield events
        yield _gauge("queue_depth", "Ledgers waiting for a worker", pipe.queue_depth)
        yield _gauge("buffered_bytes", "Ledger bytes held between intake and commit", pipe.buffered_bytes)
        yield _gauge("current_ledger", "Newest ledger received (0: none yet)", src.last_sequence or 0)
        yield _gauge("last_committed_ledger", "Newest ledger committed (0: none yet)", pipe.last_committed_ledger or 0)
        yield _gauge(
            "end_ledger", "END_LEDGER, where a bounded run stops (0: it follows the chain)", view.end_ledger or 0
        )
        yield _counter("reconnects", "Upstream reconnects", src.reconnects)
        yield _gauge("circuit_breaker_state", "0 closed, 1 open, 2 half-open", int(src.breaker.state))
        yield _counter("gaps", "Gaps detected in the upstream stream", src.gaps)
        yield _counter("duplicates", "Duplicate ledgers dropped", src.duplicates)
        skipped = CounterMetricFamily(_n("rows_skipped"), "Rows dropped by filters", labels=["reason"])
        for reason, count in sorted(pipe.rows_skipped.items()):
            skipped.add_metric([reason], count)
        yield skipped
        yield _counter("worker_deaths", "Worker processes that died holding a ledger", pipe.worker_deaths)
        yield _counter("ledgers_dead_lettered", "Bad ledgers written to the dead-letter file", pipe.dead_lettered)
        if view.sink_stats is not None:
            st = view.sink_stats()
            yield _gauge("sink_connected", "1 while the sink's database connection is up", int(st.connected))
            yield _counter("sink_retries", "Sink transactions retried after a dropped connection", st.retries)
            yield _counter("sink_reconnects", "Sink database connections made again", st.reconnects)
        if view.flight is not None:
            fl = view.flight.statistics()
            yield _gauge("flight_clients", "Arrow Flight clients connected", fl.clients)
            yield _gauge("flight_clients_lagging", "Flight clients catching up from the output after falling behind",
                         fl.lagging)  # fmt: skip
            yield _counter("flight_buffer_overflows", "Flight clients that fell too far behind live", fl.overflows)
            yield _counter("flight_clients_disconnected", "Flight streams ended with an error", fl.disconnected)
            yield _counter("flight_batches_sent", "Record batches sent over Arrow Flight", fl.batches_sent)
            yield _counter("flight_rows_sent", "Rows sent over Arrow Flight", fl.rows_sent)
        yield _histogram("ledger_processing_seconds", "Worker time per ledger", pipe.processing_seconds)
        yield _histogram("ledger_commit_seconds", "Ledger receipt to commit (history and live alike)",
                         pipe.commit_seconds)  # fmt: skip
        if pipe.close_lag_s is not None:
            yield _gauge("ledger_close_lag_seconds", "Close of the last committed ledger to its commit: the "
                         "distance behind the network when live", pipe.close_lag_s)  # fmt: skip


def open_registry(view: ServiceView) -> CollectorRegistry:
    """The service's own registry, holding only its collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(view))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, open files
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of every series, read now."""
    return generate_latest(registry)
