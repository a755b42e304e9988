"""A ``RawLedgerService`` upstream for demos and tests, with switchable faults.

It serves synthetic ledgers (unbounded), raw XDR files, galexie batches or a whole galexie datastore
(followed as it grows, like the real upstream), honours the requested
``start_ledger`` and, like the real upstream, keeps the stream open after its last ledger unless
told to end it. Faults: a rate limit, aborting with UNAVAILABLE, exiting the process, stalling,
skipping, duplicating, corrupting or mislabelling given ledgers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import attrs
import trio
import trio_asyncio
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.server import Server

from cdp._config import Config
from cdp._errors import CdpError, LedgerDecodeError
from cdp._net import bind_tcp_or_fail
from cdp.upstream.proto.raw_ledger_service import RawLedger, RawLedgerServiceBase, StreamLedgersRequest
from cdp.xdr._files import StoredLedger, load_ledgers

from ._synthetic import SyntheticLedgers

LOG = logging.getLogger("cdp.testing")


_MAX_LEDGER_BYTES = Config().max_ledger_bytes
CORRUPT_KINDS = ("random", "truncated", "wrong-type", "oversize")


def corrupt_bytes(raw: bytes, kind: str) -> bytes:
    """Bad ledger bytes of a given kind, for fault tests."""
    if kind == "truncated":
        return raw[: len(raw) // 2]
    if kind == "wrong-type":  # a valid XDR value, but the LedgerHeaderHistoryEntry, not a LedgerCloseMeta
        from cdp.xdr import _skip as sk

        return raw[8 : 4 * sk.s_LedgerHeaderHistoryEntry(sk.words(raw), 2)]
    if kind == "oversize":
        return raw + bytes(64 * 1024 * 1024 + 4096)
    return b"\x00\x00\x00\x07" + os.urandom(64)


@attrs.frozen(kw_only=True)
class FakeSourceOptions:
    """What the fake upstream serves and how it misbehaves (counts are ledgers sent)."""

    host: str = "127.0.0.1"
    port: int = 50053
    ledgers: tuple[Path, ...] = ()
    datastore: str = ""  # serve a galexie datastore (any fsspec URL) instead
    poll_interval: float = 1.0  # seconds between looks for a datastore file not written yet
    seed: int = 0
    passphrase: str | None = None
    soroban_txs: int = 4
    ledger_bytes: int = 0
    end_stream: bool = False
    rate: float = 0.0  # ledgers per second, 0 for as fast as the client reads
    fail_after: int = 0  # abort each stream with UNAVAILABLE after this many ledgers
    die_after: int = 0  # exit the process after this many ledgers in total
    stall_after: int = 0  # stop sending (keeping the connection) after this many in a stream
    skip: frozenset[int] = frozenset()  # never send these the first time they come up
    duplicate: frozenset[int] = frozenset()  # send these twice
    corrupt: frozenset[int] = frozenset()  # send bad bytes instead of these ledgers (see corrupt_kind)
    corrupt_kind: str = attrs.field(default="random", validator=attrs.validators.in_(CORRUPT_KINDS))
    mislabel: frozenset[int] = frozenset()  # send these with a wrong `sequence` field
    reorder: frozenset[int] = frozenset()  # send SEQ+1 before SEQ, the first time they come up
    garbage: frozenset[int] = frozenset()  # send a frame that is not a RawLedger instead, the first time


class _Provider:
    """Ledger bytes by sequence, from files or generated on demand."""

    def __init__(self, options: FakeSourceOptions) -> None:
        self.stored: Mapping[int, StoredLedger] = load_ledgers(options.ledgers) if options.ledgers else {}
        self.synthetic: SyntheticLedgers | None = None
        if not self.stored:
            self.synthetic = SyntheticLedgers(
                seed=options.seed, soroban_txs=options.soroban_txs, ledger_bytes=options.ledger_bytes
            )
            if options.passphrase:
                self.synthetic = attrs.evolve(self.synthetic, passphrase=options.passphrase)
        self.first = min(self.stored) if self.stored else 1
        self.last = max(self.stored) if self.stored else None

    async def get(self, sequence: int) -> bytes | None:
        """None for a sequence the files do not hold (a hole, passed over)."""
        if self.synthetic is not None:
            return self.synthetic.ledger(sequence)
        stored = self.stored.get(sequence)
        return stored.raw if stored else None


class _StoreProvider:
    """Ledger bytes out of a galexie datastore, as the real upstream serves them.

    A file that is not there yet is polled for (galexie has not written it), unless ``end_stream``:
    then the store's end is the stream's end.
    """

    first = 0  # a store has no default start: the request must name one

    def __init__(self, options: FakeSourceOptions) -> None:
        from cdp.upstream._store import Datastore

        self.store = Datastore(options.datastore, options.passphrase, None)
        self.last: int | None = None
        self.end_stream = options.end_stream
        self.poll_interval = options.poll_interval
        self._files: dict[int, dict[int, bytes]] = {}

    async def get(self, sequence: int) -> bytes | None:
        first, _ = self.store.layout.file_range(sequence)
        ledgers = self._files.get(first)
        if ledgers is None:
            ledgers = await self._fetch(first)
            if ledgers is None:
                self.last = sequence - 1
                return None
            self._files = {f: v for f, v in self._files.items() if f > first - 4 * self.store.layout.ledgers_per_file}
            self._files[first] = ledgers
        return ledgers.get(sequence)

    async def _fetch(self, first: int) -> dict[int, bytes] | None:
        loop = asyncio.get_running_loop()
        while True:
            limit = self.store.file_limit(_MAX_LEDGER_BYTES)
            key, data = await loop.run_in_executor(None, self.store.fetch_file, first, limit)
            if data is not None:
                break
            if self.end_stream:
                return None
            await asyncio.sleep(self.poll_interval)
        try:
            ledgers = await loop.run_in_executor(None, self.store.ledgers, key, data, _MAX_LEDGER_BYTES)
        except LedgerDecodeError as exc:
            raise GRPCError(Status.DATA_LOSS, str(exc)) from None
        return {ledger.sequence: ledger.raw for ledger in ledgers}


class _NotARawLedger(RawLedger):
    """What a broken or hostile upstream might frame as a message: field 2 claims more bytes than follow."""

    def __bytes__(self) -> bytes:
        return b"\x08\x05\x12\xff\xff\x03abc"

    SerializeToString = __bytes__


class FakeRawLedgerService(RawLedgerServiceBase):
    def __init__(self, options: FakeSourceOptions) -> None:
        self.options = options
        self.provider = _StoreProvider(options) if options.datastore else _Provider(options)
        self.sent_total = 0
        self.streams = 0
        self._skipped: set[int] = set()
        self._garbled: set[int] = set()

    async def stream_raw_ledgers(self, request: StreamLedgersRequest) -> AsyncIterator[RawLedger]:
        o = self.options
        p = self.provider
        self.streams += 1
        seq = request.start_ledger or p.first
        if not seq:
            raise GRPCError(Status.INVALID_ARGUMENT, "start_ledger is required: a datastore has no default start")
        if p.last is not None and not p.first <= seq <= p.last:
            raise GRPCError(Status.OUT_OF_RANGE, f"ledger {seq} is not served here: {p.first}..{p.last}")
        LOG.info("stream opened start_ledger=%d", seq)
        sent = 0
        while p.last is None or seq <= p.last:
            if o.fail_after and sent >= o.fail_after:
                raise GRPCError(Status.UNAVAILABLE, f"fault injected: stream aborted after {sent} ledgers")
            if o.stall_after and sent >= o.stall_after:
                LOG.info("fault injected: stalling after %d ledgers", sent)
                await asyncio.Event().wait()
            raw = await p.get(seq)
            if raw is None:  # a hole in a file set (real upstreams have none, so neither do we), or the end
                seq += 1
                continue
            if seq in o.skip and seq not in self._skipped:
                self._skipped.add(seq)
                seq += 1
                continue
            if seq in o.reorder and seq not in self._skipped and (nxt := await p.get(seq + 1)) is not None:
                self._skipped.add(seq)
                yield RawLedger(sequence=seq + 1, ledger_close_meta_xdr=nxt)
                sent += 1
                self.sent_total += 1
            if seq in o.garbage and seq not in self._garbled:
                self._garbled.add(seq)
                await asyncio.sleep(1 / o.rate if o.rate else 0)
                yield _NotARawLedger()
                continue  # the client reconnects; the next stream sends the ledger itself
            if seq in o.corrupt:
                raw = corrupt_bytes(raw, o.corrupt_kind)
            label = seq + 1000 if seq in o.mislabel else seq
            for _ in range(2 if seq in o.duplicate else 1):
                # Yield to the loop per message: an in-process client would otherwise wait until
                # the whole HTTP/2 window (4 MiB) had been filled before seeing the first ledger.
                await asyncio.sleep(1 / o.rate if o.rate else 0)
                yield RawLedger(sequence=label, ledger_close_meta_xdr=raw)
                sent += 1
                self.sent_total += 1
                if o.die_after and self.sent_total >= o.die_after:
                    LOG.warning("fault injected: exiting after %d ledgers", self.sent_total)
                    os._exit(3)
            seq += 1
        if not o.end_stream:
            await asyncio.Event().wait()  # the real upstream never ends a stream


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind it ourselves, so the bound port is known without grpclib's private server object."""
    return bind_tcp_or_fail(host, port, "--host", "--port")


async def serve_fake_source(
    options: FakeSourceOptions, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the fake upstream until cancelled; reports the bound port (useful with port 0).

    Must run inside ``trio_asyncio.open_loop()``: grpclib is asyncio code.
    """
    try:
        service = FakeRawLedgerService(options)
    except OSError as exc:
        raise CdpError(f"--ledgers: cannot read {exc.filename}: {exc.strerror or exc}") from None
    sock = _listening_socket(options.host, options.port)
    port = int(sock.getsockname()[1])
    server = Server([service])
    try:
        await trio_asyncio.aio_as_trio(server.start)(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        LOG.info("fake source listening host=%s port=%d", options.host, port)
        for handler in logging.getLogger().handlers:
            handler.flush()
        task_status.started(port)
        await trio.sleep_forever()
    finally:
        server.close()
        with trio.move_on_after(1, shield=True):
            await trio_asyncio.aio_as_trio(server.wait_closed)()
