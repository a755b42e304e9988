"""Ledgers from a galexie datastore (SEP-54): a local directory, S3, GCS, or any fsspec URL.

The store's files are fetched ahead in order by a few threads (fsspec is blocking I/O), at most
``prefetch`` files held at once, each fetch retried with backoff; a batch is split with the
generated skippers, never decoded. In a bounded range a missing file is an error naming its key;
without an end, a missing file is one galexie has not written yet, and is polled for.

Each hop between the event loop and a thread costs the loop ~0.1 ms and a few GIL hand-offs, as much
as reading and decompressing a pubnet ledger; so in a bounded range of a local store one fetch reads
up to ``SPAN_LEDGERS`` ledgers' worth of consecutive small files, and a ``prepare`` function given by
the consumer (the pipeline's thread-mode processing) runs on each ledger in the thread that split it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Final

import attrs
import trio

from cdp._config import Config
from cdp._errors import UpstreamError, one_line
from cdp.extract import Ledger
from cdp.extract._network import NetworkCheck

from ._breaker import Backoff, CircuitBreaker, after_failure
from ._fs import denied
from ._layout import Layout
from ._stats import RateMeter, SourceStatistics
from ._store import EAGER_SPLIT_LEDGERS, Datastore, ObjectRefused, StoreUnreachable, default_prefetch, in_sequence

LOG = logging.getLogger("cdp.upstream")
SPAN_LEDGERS: Final = 8  # one fetch of a local store's bounded range: consecutive small files up to this many ledgers

# A fetched file's ledgers (or None: the file is missing, a hole), with the file's first ledger and key.
_Part = tuple[int, str, list[Ledger] | None]
# A fetch: the first file's key, the bytes read (None: the first file is missing), the compressed file
# (when it is split later) or its files' ledgers.
_Fetched = tuple[str, int | None, bytes, list[_Part] | None]


@attrs.define(eq=False)
class _File:
    """One fetch: the file holding ledger ``first``, and with ``count`` > 1 the files after it."""

    first: int
    prev: _File | None  # in live mode only the first missing file polls the store
    count: int = 1
    done: trio.Event = attrs.field(factory=trio.Event)
    key: str = ""
    data: bytes = b""  # held compressed (pubnet compresses ~8x) until it is this file's turn ...
    parts: list[_Part] | None = None  # ... or split already, for files of a few ledgers
    error: BaseException | None = None


class DatastoreSource:
    """Streams ledgers from ``start`` on out of a datastore into a Trio channel, like ``LedgerSource``."""

    def __init__(
        self,
        config: Config,
        start: int,
        *,
        network_claim: str = "",
        prepare: Callable[[Ledger], Ledger] | None = None,
    ) -> None:
        """``network_claim`` names where a given network came from in errors (default: the setting);
        ``prepare`` runs on each ledger in the fetching thread, given the network in force (never on a
        refused ledger, nor before the network is known), and what it returns is handed on."""
        self.config = config
        self.start = start
        self._claim = network_claim
        self._prepare = prepare
        given = None
        if config.datastore_ledgers_per_file:
            given = Layout(config.datastore_ledgers_per_file, config.datastore_files_per_partition or 1)
        self.given_layout = given
        self.store: Datastore | None = None
        self._next = start
        self._received = 0
        self._bytes = 0
        self._retries = 0
        self._failures: dict[str, int] = {}
        self._last_error: str | None = None
        self._last_at: float | None = None
        self._rate = RateMeter()
        self._open = False
        self._failing = False  # the last fetch failed: not ready until one succeeds
        self._calls: dict[int, float] = {}  # fetches in flight: their file's first ledger -> time.monotonic()
        self.breaker = CircuitBreaker(config.breaker_failure_threshold, config.breaker_reset_timeout_s)
        self.network = NetworkCheck(config.network_passphrase, claim=network_claim)

    @property
    def endpoint(self) -> str:
        return self.config.datastore_url

    def statistics(self) -> SourceStatistics:
        return SourceStatistics(
            connected=self._open and not self._failing,
            endpoint=self.endpoint,
            ledgers_received=self._received,
            bytes_received=self._bytes,
            ingest_rate=self._rate.rate,
            last_sequence=self._next - 1 if self._received else None,
            next_sequence=self._next,
            reconnects=self._retries,
            gaps=0,
            duplicates=0,
            sequence_mismatches=0,
            failures_by_kind=dict(self._failures),
            last_error=self._last_error,
            last_message_at=self._last_at,
            breaker=self.breaker.statistics(),
            network=self.network.network,
            network_verified_by=self.network.proved_by,
            call_seconds=time.monotonic() - min(self._calls.values()) if self._calls else None,
            call_timeout_s=self.config.datastore_timeout_s,
        )

    async def run(
        self, send: trio.MemorySendChannel[Ledger], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver ledgers ``start``..``end_ledger`` (then close ``send``), or follow the store forever.

        Raises:
            ConfigError: the store's manifest disagrees with the settings, or its ledgers with the
                network given (or its manifest's).
            UpstreamError: a file of a bounded range is missing or cannot be fetched.
        """
        self.store = await self._open_store()
        self.network = self.store.network_check(self.config.network_passphrase, self._claim)
        self._open = True
        task_status.started()
        layout = self.store.layout
        per_file = layout.ledgers_per_file
        prefetch = self.config.datastore_prefetch_files or default_prefetch(per_file)
        span = self._span(per_file)
        limiter = trio.CapacityLimiter(self.config.datastore_fetch_workers)
        order_send, order_recv = trio.open_memory_channel[_File](max(2, prefetch // span))
        first = layout.file_range(self.start)[0]
        try:
            async with send, trio.open_nursery() as nursery:
                nursery.start_soon(self._schedule, order_send, limiter, first, span, nursery)
                try:
                    async with order_recv:
                        async for file in order_recv:
                            if await self._hand_on(file, send):
                                break
                except trio.BrokenResourceError:
                    LOG.debug("downstream stopped taking ledgers next=%d", self._next)  # it reports why
                nursery.cancel_scope.cancel("range delivered or downstream gone")
        finally:
            self._open = False

    def _span(self, per_file: int) -> int:
        """Files per fetch: several small ones of a bounded range in a local store (a thread reading
        several remote ones would add up their latencies; following a store, the next file may not be
        written yet), else one."""
        assert self.store is not None
        if not (self.store.local and self.config.end_ledger) or per_file > EAGER_SPLIT_LEDGERS:
            return 1
        return max(1, SPAN_LEDGERS // per_file)

    async def _hand_on(self, file: _File, send: trio.MemorySendChannel[Ledger]) -> bool:
        """Deliver a fetched file's ledgers (in its turn); True once ``end_ledger`` has been handed on."""
        assert self.store is not None
        await file.done.wait()
        file.prev = None  # else every file ever scheduled stays linked, live for days
        if file.error is not None:
            raise file.error
        data, file.data = file.data, b""
        parts, file.parts = file.parts, None
        if parts is None:  # fetched compressed: split now
            parts = [(file.first, file.key, await trio.to_thread.run_sync(self._split, file.first, file.key, data))]
        del data
        for first, key, ledgers in parts:
            if ledgers is None:
                raise self.store.hole(key)
            if await self._deliver(first, key, ledgers, send):
                return True
        return False

    async def _open_store(self) -> Datastore:
        """The store, its manifest read; an unreachable store is retried as a failing fetch is."""
        backoff = Backoff(self.config.backoff_base_s, self.config.backoff_cap_s)
        while True:
            await self.breaker.wait_permitted()
            try:
                return await trio.to_thread.run_sync(
                    Datastore, self.config.datastore_url, self.config.network_passphrase, self.given_layout,
                    self.config.datastore_timeout_s, abandon_on_cancel=True,
                )  # fmt: skip
            except StoreUnreachable as exc:
                self._count("open", str(exc))
                await trio.sleep(backoff.next_delay())

    async def _schedule(
        self,
        order: trio.MemorySendChannel[_File],
        limiter: trio.CapacityLimiter,
        first: int,
        span: int,
        nursery: trio.Nursery,
    ) -> None:
        """One slot per fetch (``span`` files, fewer at the range's end), in order; each fetched by its
        own task under the limiter."""
        assert self.store is not None
        layout = self.store.layout
        per_file = layout.ledgers_per_file
        end = self.config.end_ledger or math.inf
        prev = None
        async with order:
            while first <= end:
                count = span if span == 1 else min(span, (layout.file_range(int(end))[0] - first) // per_file + 1)
                file = _File(first, prev, count)
                try:
                    await order.send(file)
                except trio.BrokenResourceError:
                    return  # the reader stopped (a file's error, or downstream gone): it says why
                nursery.start_soon(self._fetch, file, limiter)
                first += per_file * count
                prev = file

    async def _fetch(self, file: _File, limiter: trio.CapacityLimiter) -> None:
        assert self.store is not None
        backoff: Backoff | None = None  # made at the first failure: seeding its generator costs ~0.1 ms
        fetch = self._fetch_split if self.store.layout.ledgers_per_file <= EAGER_SPLIT_LEDGERS else self._fetch_only
        size: int | None = None
        data = b""
        parts: list[_Part] | None = None
        try:
            while True:
                await self.breaker.wait_permitted()
                try:
                    async with limiter:
                        self._calls[file.first] = time.monotonic()
                        try:
                            key, size, data, parts = await trio.to_thread.run_sync(
                                fetch, file.first, file.count, abandon_on_cancel=True
                            )  # a stalled store must not hold a stop: the read is idempotent, its result unused
                        finally:
                            del self._calls[file.first]
                except Exception as exc:  # any transport's failure (OS, botocore, aiohttp, ...): ride it out
                    if denied(exc):  # credentials or access: retrying will not fix it
                        raise UpstreamError(f"datastore {self.endpoint}: {one_line(exc)}") from None
                    self._count("fetch", f"ledger {file.first}: {one_line(exc)}")
                    backoff = backoff or Backoff(self.config.backoff_base_s, self.config.backoff_cap_s)
                    await trio.sleep(backoff.next_delay())
                    continue
                if self._failing:
                    LOG.info("datastore reachable again endpoint=%s", self.endpoint)
                self._failing = False
                self.breaker.record_success()
                file.key = key
                if size is not None:
                    break
                if self.config.end_ledger:
                    raise self.store.hole(key)
                if file.prev is not None and not file.prev.done.is_set():
                    await file.prev.done.wait()  # the store grows in order: poll only at its end
                    continue
                await trio.sleep(self.config.datastore_poll_interval_s)  # not written yet: follow the store
            if size is not None:
                file.data, file.parts = data, parts
                self._bytes += size
        except UpstreamError as exc:
            file.error = exc
        file.done.set()

    def _fetch_only(self, first: int, count: int) -> _Fetched:
        """The file, compressed (split when its turn comes); refused, a part of bad ledgers."""
        assert self.store is not None
        assert count == 1
        try:
            key, data = self.store.fetch_file(first, self._limit)
        except ObjectRefused as exc:  # not retried: each of its ledgers is a bad ledger
            return self.store.layout.key(first), 0, b"", [self._refused(first, exc)]
        return key, None if data is None else len(data), data or b"", None

    def _fetch_split(self, first: int, count: int) -> _Fetched:
        """The ``count`` files' ledgers in one thread hop (size None: the first file is missing). A file
        refused is a part of bad ledgers; a later file missing is a part without ledgers (several
        files per fetch only in bounded ranges: a hole)."""
        assert self.store is not None
        per_file = self.store.layout.ledgers_per_file
        parts: list[_Part] = []
        size = 0
        for f in range(first, first + count * per_file, per_file):
            try:
                key, data = self.store.fetch_file(f, self._limit)
            except ObjectRefused as exc:  # not retried: each of its ledgers is a bad ledger
                parts.append(self._refused(f, exc))
                continue
            if data is None and not parts:
                return key, None, b"", None
            if data is None:
                parts.append((f, key, None))
                break
            size += len(data)
            parts.append((f, key, self._split_prepared(f, key, data)))
        return parts[0][1], size, b"", parts

    def _refused(self, first: int, exc: ObjectRefused) -> _Part:
        assert self.store is not None
        return first, self.store.layout.key(first), self.store.refused(first, exc)

    def _split_prepared(self, first: int, key: str, data: bytes) -> list[Ledger]:
        """``_split``, then ``prepare`` on each good ledger of the range when given and the network is known."""
        ledgers = self._split(first, key, data)
        network = self.network.network
        if self._prepare is None or network is None:
            return ledgers
        prepare, lo, hi = self._prepare, self.start, self.config.end_ledger or math.inf
        return [
            prepare(attrs.evolve(ledger, network=network))
            if ledger.problem is None and lo <= ledger.sequence <= hi
            else ledger
            for ledger in ledgers
        ]

    def _split(self, first: int, key: str, data: bytes) -> list[Ledger]:
        assert self.store is not None
        return self.store.file_ledgers(first, key, data, self.config.max_ledger_bytes)

    @property
    def _limit(self) -> int:
        assert self.store is not None
        return self.store.file_limit(self.config.max_ledger_bytes)

    async def _deliver(self, first: int, key: str, ledgers: list[Ledger], send: trio.MemorySendChannel[Ledger]) -> bool:
        """Hand on the file's ledgers of the range; True once ``end_ledger`` has been handed on.

        Raises:
            UpstreamError: the file does not hold the consecutive ledgers its name promises.
        """
        assert self.store is not None
        last = self.store.layout.file_range(first)[1]
        for ledger in in_sequence(ledgers, self._next, last, f"datastore {self.endpoint}: {key}"):
            await send.send(self.network.stamp(ledger))
            now = trio.current_time()
            self._rate.tick(now)
            self._last_at = now
            self._received += 1
            self._next = ledger.sequence + 1
            if self.config.end_ledger and self._next > self.config.end_ledger:
                return True
        return False

    def _count(self, kind: str, error: str) -> None:
        self._retries += 1
        self._failures[kind] = self._failures.get(kind, 0) + 1
        self._last_error = error
        self._failing = True
        note = after_failure(self.breaker, self.config.connect_max_attempts, f"datastore {self.endpoint}", error)
        LOG.warning(
            "datastore fetch failed kind=%s endpoint=%s error=%r: retrying with backoff breaker=%s%s",
            kind, self.endpoint, error, self.breaker.state.name.lower(), note,
        )  # fmt: skip
