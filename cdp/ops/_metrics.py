"""Prometheus series, in a registry of our own (no global state), prefix ``contract_data_processor_``."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX: Final = "contract_data_processor"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)

        def n(name: str) -> str:
            return f"{PREFIX}_{name}"

        self.up = Gauge(n("up"), "1 while the service runs", registry=r)
        self.component_healthy = Gauge(
            n("component_healthy"), "1 if the component is healthy", ["component"], registry=r
        )
        self.ledgers_received = Counter(n("ledgers_received"), "Ledgers received from upstream", registry=r)
        self.bytes_received = Counter(n("bytes_received"), "LedgerCloseMeta bytes received", registry=r)
        self.ingest_rate = Gauge(n("ingest_rate"), "Ledgers per second from upstream, smoothed", registry=r)
        self.ledgers_processed = Counter(n("ledgers_processed"), "Ledgers committed", registry=r)
        self.contracts_found = Counter(n("contracts_found"), "Rows written", registry=r)
        self.processing_errors = Counter(n("processing_errors"), "Errors by kind", ["kind"], registry=r)
        self.processor_errors = Counter(
            n("processor_errors"), "Ledgers a processor failed on", ["processor"], registry=r
        )
        self.processor_events = Counter(
            n("processor_events"), "Processor events, e.g. fast_path_fallback", ["processor", "event"], registry=r
        )
        self.queue_depth = Gauge(n("queue_depth"), "Ledgers waiting for a worker", registry=r)
        self.current_ledger = Gauge(n("current_ledger"), "Newest ledger received", registry=r)
        self.last_committed_ledger = Gauge(n("last_committed_ledger"), "Newest ledger committed", registry=r)
        self.reconnects = Counter(n("reconnects"), "Upstream reconnects", registry=r)
        self.circuit_breaker_state = Gauge(n("circuit_breaker_state"), "0 closed, 1 open, 2 half-open", registry=r)
        self.gaps = Counter(n("gaps"), "Gaps detected in the upstream stream", registry=r)
        self.duplicates = Counter(n("duplicates"), "Duplicate ledgers dropped", registry=r)
        self.rows_skipped = Counter(n("rows_skipped"), "Rows dropped by filters", ["reason"], registry=r)
        self.ledgers_skipped = Counter(
            n("ledgers_dead_lettered"), "Bad ledgers written to the dead-letter file", registry=r
        )
        self.ledger_processing_seconds = Histogram(
            n("ledger_processing_seconds"), "Worker time per ledger", registry=r, buckets=LATENCY_BUCKETS
        )
        self.ledger_end_to_end_seconds = Histogram(
            n("ledger_end_to_end_seconds"), "Ledger close time to commit", registry=r, buckets=LATENCY_BUCKETS
        )
        self._counted: dict[str, float] = {}

    def sync_counter(self, counter: Counter, key: str, total: float) -> None:
        """Advance a counter to a running total kept elsewhere (e.g. the source's statistics)."""
        delta = total - self._counted.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._counted[key] = total

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
