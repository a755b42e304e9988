"""The upstream client's Trio side: attempts, reconnects, failover, the idle watchdog.

Each attempt runs ``_grpc.stream_ledgers`` (asyncio, through trio-asyncio) under a Trio cancel
scope that is first the dial timeout, then the idle watchdog: its deadline moves on every message
and is lifted while we wait on our own full channel, which is real backpressure (HTTP/2 flow
control then slows the upstream). A reconnect resumes at the ledger after the last one handed on;
the ``Sequencer`` decides duplicates, gaps and mismatches.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import trio
import trio_asyncio

from cdp._config import Config
from cdp._errors import UpstreamError
from cdp._watch import Watched
from cdp.extract import Ledger
from cdp.extract._network import NetworkCheck

from ._breaker import Backoff, CircuitBreaker, after_failure
from ._grpc import STREAM_ERRORS, Handoff, classify, stream_ledgers
from ._sequencer import Deliver, Duplicate, Sequencer
from ._stats import RateMeter, SourceStatistics

LOG = logging.getLogger("cdp.upstream")


class RetriableFailure(Exception):
    """One stream attempt failed in a way a reconnect may fix; ``kind`` labels the metric."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LedgerSource:
    """Streams ledgers from ``start`` on into a Trio channel, reconnecting and failing over."""

    def __init__(self, config: Config, start: int, *, network_claim: str = "") -> None:
        """``network_claim`` names where a given network came from in errors (default: the setting)."""
        self.config = config
        self.endpoints = config.source_endpoint
        self.breaker = CircuitBreaker(config.breaker_failure_threshold, config.breaker_reset_timeout_s)
        self.backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
        self.sequencer = Sequencer(start, config.max_ledger_bytes)
        self.network = NetworkCheck(config.network_passphrase, claim=network_claim)
        self._endpoint_index = 0
        self._connected = Watched(False)
        self._answered = False
        self._received = 0
        self._bytes = 0
        self._rate = RateMeter()
        self._reconnects = 0
        self._gaps = 0
        self._duplicates = 0
        self._mismatches = 0
        self._last_error: str | None = None
        self._last_message_at: float | None = None
        self._failures: dict[str, int] = {}

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once the stream is (or, with ``False``, is no longer) connected."""
        await self._connected.wait_until(lambda c: c == connected)

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._endpoint_index]

    @property
    def done(self) -> bool:
        return bool(self.config.end_ledger) and self.sequencer.next > self.config.end_ledger

    def statistics(self) -> SourceStatistics:
        return SourceStatistics(
            connected=self._connected.value,
            endpoint=self.endpoint,
            ledgers_received=self._received,
            bytes_received=self._bytes,
            ingest_rate=self._rate.rate,
            last_sequence=self.sequencer.next - 1 if self._received else None,
            next_sequence=self.sequencer.next,
            reconnects=self._reconnects,
            gaps=self._gaps,
            duplicates=self._duplicates,
            sequence_mismatches=self._mismatches,
            failures_by_kind=dict(self._failures),
            last_error=self._last_error,
            last_message_at=self._last_message_at,
            breaker=self.breaker.statistics(),
            network=self.network.network,
            network_verified_by=self.network.proved_by,
        )

    async def run(
        self,
        send: trio.MemorySendChannel[Ledger],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver ledgers until ``end_ledger`` (then close ``send``), until the receiving side is
        closed, or until cancelled.

        Raises:
            UpstreamError: the upstream answered with a status that retrying cannot fix.
            ConfigError: the ledgers belong to another network than NETWORK_PASSPHRASE (or, after a
                reconnect or failover, than before).
        """
        task_status.started()
        async with send:
            while not self.done:
                await self.breaker.wait_permitted()
                try:
                    await self._attempt(send)
                except RetriableFailure as exc:
                    self._fail(exc)
                    await trio.sleep(self.backoff.next_delay())
                except trio.BrokenResourceError:
                    LOG.debug("downstream stopped taking ledgers next=%d", self.sequencer.next)
                    return  # whoever reads the channel has stopped (and reports why): nothing to deliver to

    def _fail(self, exc: RetriableFailure) -> None:
        self._last_error = str(exc)
        self._reconnects += 1
        self._failures[exc.kind] = self._failures.get(exc.kind, 0) + 1
        old = self.endpoint
        where = f"upstream {','.join(self.endpoints)}"
        note = after_failure(self.breaker, self.config.connect_max_attempts, where, f"{old}: {exc}")
        self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
        LOG.warning(
            "upstream failed kind=%s endpoint=%s error=%r resume_at=%d next_endpoint=%s breaker=%s%s",
            exc.kind, old, str(exc), self.sequencer.next, self.endpoint, self.breaker.state.name.lower(), note,
        )  # fmt: skip

    async def _attempt(self, send: trio.MemorySendChannel[Ledger]) -> None:
        endpoint = self.endpoint
        self._answered = False
        with trio.CancelScope() as watchdog:
            watchdog.deadline = trio.current_time() + self.config.connect_timeout_s
            try:
                await trio_asyncio.aio_as_trio(stream_ledgers)(
                    endpoint,
                    self.sequencer.next,
                    self.config.max_ledger_bytes,
                    partial(self._on_connected, endpoint, watchdog),
                    trio_asyncio.trio_as_aio(partial(self._on_message, send, watchdog)),
                )
            except STREAM_ERRORS as exc:
                if self.done:  # everything asked for was delivered: how the stream ended is moot
                    LOG.debug("ignoring error after end_ledger error=%r", str(exc))
                    return
                failure = classify(exc)
                if not failure.retriable:
                    raise UpstreamError(
                        f"upstream {endpoint} refused the stream at ledger {self.sequencer.next}: {failure.message}"
                    ) from None
                raise RetriableFailure(failure.kind, failure.message) from None
            finally:
                self._connected.set(False)
        if watchdog.cancelled_caught:
            if self._answered:
                raise RetriableFailure("idle", f"no ledger for {self.config.idle_timeout_s}s")
            raise RetriableFailure("connect", f"no answer within {self.config.connect_timeout_s}s")
        if not self.done:
            raise RetriableFailure("ended", "upstream ended the stream")

    def _on_connected(self, endpoint: str, watchdog: trio.CancelScope) -> None:
        self._connected.set(True)
        self._answered = True
        watchdog.deadline = trio.current_time() + self.config.idle_timeout_s
        self.network.rearm()  # another upstream, or the same one restarted: its network is proven again
        LOG.info("upstream connected endpoint=%s start_ledger=%d", endpoint, self.sequencer.next)

    async def _on_message(
        self, send: trio.MemorySendChannel[Ledger], watchdog: trio.CancelScope, handoff: Handoff
    ) -> bool:
        """Judge one message and pass it on; True once ``end_ledger`` has been handed on."""
        message = handoff.take()
        now = trio.current_time()
        self._bytes += len(message.raw)
        self._rate.tick(now)
        self._last_message_at = now
        watchdog.deadline = now + self.config.idle_timeout_s
        decision = self.sequencer.judge(message.sequence, message.raw, message.dropped_size)
        if isinstance(decision, Duplicate):
            self._duplicates += 1
            LOG.warning("duplicate ledger dropped ledger=%d expected=%d", decision.sequence, decision.expected)
            await trio.lowlevel.checkpoint()
            return False
        if not isinstance(decision, Deliver):
            self._gaps += 1
            raise RetriableFailure(
                "gap", f"gap in upstream stream: expected ledger {decision.expected}, got {decision.got}"
            )
        ledger = decision.ledger
        if decision.mismatch is not None:
            self._mismatches += 1
            LOG.warning(
                "sequence field disagrees with the XDR header field=%d header=%d: using the header", *decision.mismatch
            )
        if ledger.problem is not None:
            LOG.error("refusing ledger=%d: %s", ledger.sequence, ledger.problem)
        ledger = self.network.stamp(ledger)
        watchdog.deadline = math.inf  # waiting on our own full channel is not an upstream stall
        await send.send(ledger)
        watchdog.deadline = trio.current_time() + self.config.idle_timeout_s
        self._received += 1
        self.sequencer.delivered(ledger)
        self.breaker.record_success()
        self.backoff.reset()
        return self.done
