"""The upstream client: grpclib's ``StreamRawLedgers`` call run under Trio through trio-asyncio.

One asyncio coroutine owns the grpclib channel and the call (as ``stack-notes.md`` advises) and
hands each ledger to a Trio memory channel: ``send_nowait`` when there is room, otherwise an
awaited send, which is real backpressure (HTTP/2 flow control then slows the upstream). A Trio
cancel scope around the call is the dial timeout, then the idle watchdog: its deadline moves on
every message and is lifted while we wait on our own full channel.

Every ledger is handed downstream exactly once and in order: a reconnect resumes at the last one
handed on + 1, duplicates are dropped and counted, a gap is an error that reconnects at the
expected ledger, and the sequence is taken from the XDR header when the ``sequence`` field
disagrees with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Final

import attrs
import h2.exceptions
import trio
import trio_asyncio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from cdp._config import Config
from cdp._errors import LedgerDecodeError, UpstreamError
from cdp.extract._ledger import Ledger
from cdp.pipeline._budget import ByteBudget
from cdp.upstream.proto.raw_ledger_service import RawLedger, StreamLedgersRequest
from cdp.xdr._header import peek_header

from ._breaker import Backoff, BreakerStatistics, CircuitBreaker

LOG = logging.getLogger("cdp.upstream")

METHOD: Final = "/raw_ledger_service.RawLedgerService/StreamRawLedgers"
RETRIABLE_STATUSES: Final = frozenset(
    {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.RESOURCE_EXHAUSTED}
)
# What a dropped connection looks like through grpclib: transport errors, a stream reset, an
# HTTP/2 protocol error, or asyncio's own timeout.
CONNECTION_ERRORS: Final = (
    OSError,
    StreamTerminatedError,
    ProtocolError,
    h2.exceptions.ProtocolError,
    h2.exceptions.StreamClosedError,
    asyncio.TimeoutError,
    EOFError,
)


async def _recv_limited(stream: Any, limit: int) -> RawLedger | int | None:
    """``stream.recv_message()`` that refuses to buffer a message over ``limit`` bytes.

    grpclib reads a whole message into memory whatever its announced length, so a hostile upstream
    could exhaust memory with one 4 GiB frame. This reads the 5-byte gRPC prefix itself (through the
    same private stream grpclib's own ``recv_message`` uses) and, for an oversized message, reads and
    discards it in 1 MiB chunks, returning its size instead. None at the end of the stream.
    """
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    with stream._wrapper:
        prefix = await stream._stream.recv_data(5)
        if not prefix:
            return None
        if prefix[0]:
            raise ProtocolError("compressed gRPC messages are not supported")
        size = int.from_bytes(prefix[1:5], "big")
        if size <= limit:
            data = await stream._stream.recv_data(size)
            message = RawLedger().parse(data)
            return message
        left = size
        while left:
            chunk = await stream._stream.recv_data(min(left, 1 << 20))
            if not chunk:
                raise ProtocolError("stream ended inside a message")
            left -= len(chunk)
        return size


class RetriableFailure(Exception):
    """One stream attempt failed in a way a reconnect may fix; ``kind`` labels the metric."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
    last_error: str | None
    last_message_at: float | None  # trio clock
    breaker: BreakerStatistics


class LedgerSource:
    """Streams ledgers from ``start`` on into a Trio channel, reconnecting and failing over."""

    def __init__(self, config: Config, start: int, budget: ByteBudget | None = None) -> None:
        self.config = config
        self.budget = budget or ByteBudget(config.max_buffered_bytes)
        self.endpoints = config.source_endpoint
        self.breaker = CircuitBreaker(config.breaker_failure_threshold, config.breaker_reset_timeout_s)
        self.backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
        self._next = start
        self._endpoint_index = 0
        self._connected_flag = False
        self._connection_changed = trio.Event()
        self._answered = False
        self._received = 0
        self._bytes = 0
        self._rate = 0.0
        self._rate_at: float | None = None
        self._reconnects = 0
        self._gaps = 0
        self._duplicates = 0
        self._mismatches = 0
        self._last_error: str | None = None
        self._last_message_at: float | None = None
        self.failures_by_kind: dict[str, int] = {}
        self._oversize: dict[int, int] = {}

    @property
    def _connected(self) -> bool:
        return self._connected_flag

    @_connected.setter
    def _connected(self, value: bool) -> None:
        if value != self._connected_flag:
            self._connected_flag = value
            self._connection_changed.set()
            self._connection_changed = trio.Event()

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once the stream is (or, with ``False``, is no longer) connected."""
        while self._connected_flag != connected:
            await self._connection_changed.wait()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._endpoint_index]

    @property
    def done(self) -> bool:
        return bool(self.config.end_ledger) and self._next > self.config.end_ledger

    def statistics(self) -> SourceStatistics:
        return SourceStatistics(
            connected=self._connected,
            endpoint=self.endpoint,
            ledgers_received=self._received,
            bytes_received=self._bytes,
            ingest_rate=self._rate,
            last_sequence=self._next - 1 if self._received else None,
            next_sequence=self._next,
            reconnects=self._reconnects,
            gaps=self._gaps,
            duplicates=self._duplicates,
            sequence_mismatches=self._mismatches,
            last_error=self._last_error,
            last_message_at=self._last_message_at,
            breaker=self.breaker.statistics(),
        )

    async def run(
        self,
        send: trio.MemorySendChannel[Ledger],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver ledgers until ``end_ledger`` (then close ``send``) or until cancelled.

        Raises:
            UpstreamError: the upstream answered with a status that retrying cannot fix.
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

    def _fail(self, exc: RetriableFailure) -> None:
        self._connected = False
        self._last_error = str(exc)
        self._reconnects += 1
        self.failures_by_kind[exc.kind] = self.failures_by_kind.get(exc.kind, 0) + 1
        self.breaker.record_failure()
        old = self.endpoint
        self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
        LOG.warning(
            "upstream failed kind=%s endpoint=%s error=%r resume_at=%d next_endpoint=%s breaker=%s",
            exc.kind, old, str(exc), self._next, self.endpoint, self.breaker.state.name.lower(),
        )  # fmt: skip

    async def _attempt(self, send: trio.MemorySendChannel[Ledger]) -> None:
        endpoint = self.endpoint
        self._answered = False
        with trio.CancelScope() as watchdog:
            watchdog.deadline = trio.current_time() + self.config.connect_timeout_s
            try:
                await trio_asyncio.aio_as_trio(self._stream)(endpoint, send, watchdog)
            except (GRPCError, *CONNECTION_ERRORS) as exc:
                if self.done:  # everything asked for was delivered: how the stream ended is moot
                    LOG.debug("ignoring error after end_ledger error=%r", str(exc))
                    return
                raise self._classify(endpoint, exc) from None
        if watchdog.cancelled_caught:
            if self._answered:
                raise RetriableFailure("idle", f"no ledger for {self.config.idle_timeout_s}s")
            raise RetriableFailure("connect", f"no answer within {self.config.connect_timeout_s}s")
        if not self.done:
            raise RetriableFailure("ended", "upstream ended the stream")

    def _classify(self, endpoint: str, exc: BaseException) -> Exception:
        if isinstance(exc, GRPCError):
            if exc.status in RETRIABLE_STATUSES:
                return RetriableFailure(exc.status.name.lower(), f"{exc.status.name}: {exc.message}")
            return UpstreamError(
                f"upstream {endpoint} refused the stream at ledger {self._next}: {exc.status.name}: {exc.message}"
            )
        return RetriableFailure("connection", f"{type(exc).__name__}: {exc}")

    async def _stream(self, endpoint: str, send: trio.MemorySendChannel[Ledger], watchdog: trio.CancelScope) -> None:
        """asyncio side: owns the grpclib channel and call for one attempt."""
        host, _, port = endpoint.rpartition(":")
        channel = Channel(host.strip("[]"), int(port))
        try:
            async with channel.request(METHOD, Cardinality.UNARY_STREAM, StreamLedgersRequest, RawLedger) as stream:
                await stream.send_message(StreamLedgersRequest(start_ledger=self._next), end=True)
                await stream.recv_initial_metadata()
                self._connected = self._answered = True
                watchdog.deadline = trio.current_time() + self.config.idle_timeout_s
                LOG.info("upstream connected endpoint=%s start_ledger=%d", endpoint, self._next)
                while True:
                    msg = await _recv_limited(stream, self.config.max_ledger_bytes)
                    if msg is None:
                        await stream.recv_trailing_metadata()  # raises GRPCError on a bad status
                        return
                    if isinstance(msg, int):
                        msg = self._oversized(msg)
                    if await self._handle(msg, send, watchdog):
                        await stream.cancel()  # RST_STREAM now rather than waiting for an end that never comes
                        return
        finally:
            self._connected = False
            channel.close()

    def _oversized(self, size: int) -> RawLedger:
        """A message over MAX_LEDGER_BYTES was read and dropped; it stands for the expected ledger."""
        LOG.error("oversized ledger ledger=%d bytes=%d limit=%d", self._next, size, self.config.max_ledger_bytes)
        self._oversize[self._next] = size
        return RawLedger(sequence=self._next, ledger_close_meta_xdr=b"")

    async def _handle(self, msg: RawLedger, send: trio.MemorySendChannel[Ledger], watchdog: trio.CancelScope) -> bool:
        """Check one message and pass it on; True once ``end_ledger`` has been handed on."""
        now = trio.current_time()
        raw = msg.ledger_close_meta_xdr
        self._bytes += len(raw)
        self._tick_rate(now)
        self._last_message_at = now
        seq, close_time = msg.sequence, None
        try:
            facts = peek_header(raw)
        except LedgerDecodeError:
            pass  # the worker reports it with the sequence named; the label is all we have
        else:
            close_time = facts.close_time
            if facts.sequence != msg.sequence:
                self._mismatches += 1
                LOG.warning(
                    "sequence field disagrees with the XDR header field=%d header=%d: using the header",
                    msg.sequence, facts.sequence,
                )  # fmt: skip
                seq = facts.sequence
        if seq < self._next:
            self._duplicates += 1
            LOG.warning("duplicate ledger dropped ledger=%d expected=%d", seq, self._next)
            watchdog.deadline = now + self.config.idle_timeout_s
            return False
        if seq > self._next:
            self._gaps += 1
            raise RetriableFailure("gap", f"gap in upstream stream: expected ledger {self._next}, got {seq}")
        size = self._oversize.pop(seq, None)
        problem = (
            None
            if size is None
            else f"ledger message of {size} bytes exceeds MAX_LEDGER_BYTES={self.config.max_ledger_bytes}"
        )
        ledger = Ledger(seq, close_time, raw, problem)
        watchdog.deadline = math.inf  # waiting on our own full channel is not an upstream stall
        if self.budget.would_block(len(raw)):
            await trio_asyncio.trio_as_aio(self.budget.take)(len(raw))
        else:
            self.budget.take_nowait(len(raw))
        try:
            send.send_nowait(ledger)
        except trio.WouldBlock:
            await trio_asyncio.trio_as_aio(send.send)(ledger)
        watchdog.deadline = trio.current_time() + self.config.idle_timeout_s
        self._received += 1
        self._next = seq + 1
        self.breaker.record_success()
        self.backoff.reset()
        return self.done

    def _tick_rate(self, now: float) -> None:
        if self._rate_at is not None:
            dt = max(now - self._rate_at, 1e-6)
            alpha = min(1.0, dt / 5.0)  # ~5 s smoothing window
            self._rate += alpha * (1.0 / dt - self._rate)
        self._rate_at = now
