"""The Trio side of Arrow Flight: tickets, who is connected, what each has been given.

Every change to this state happens in Trio (the pipeline's commit listener and ``next_step``, which
the server's threads call through ``trio.from_thread``), so it needs no lock. See ``_flight``.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from cdp._config import Config
from cdp._errors import ConfigError
from cdp._validators import U32_MAX
from cdp.extract import Row
from cdp.extract._rows import STATE_KIND as KIND
from cdp.processors import RowFilter

from ._base import Durable
from ._replay import Retained

LOG = logging.getLogger("cdp.flight")

COMPAT_TICKET: Final = b"contract-data-stream"
WAIT_S: Final = 0.5  # a waiting stream looks up this often whether its client has gone
BATCH_ROWS: Final = 10_000  # rows per record batch, at most (a ledger is never split)
_FILTER_KEYS: Final = frozenset(
    ("filter_contract_ids", "filter_asset_codes", "filter_asset_issuers", "filter_key_types",
     "filter_durability", "filter_balance_holders", "include_deleted")
)  # fmt: skip


class TicketError(ValueError):
    """A ticket this server cannot serve; the message says why."""


class TooManyClients(Exception):
    """``FLIGHT_MAX_CLIENTS`` streams are being served already."""


def ledger_bytes(rows: Sequence[Row]) -> int:
    """About what a ledger's rows take in memory: their text, plus a little per row and field."""
    return sum(200 + sum(len(v) for v in r.values() if isinstance(v, str)) for r in rows)


@attrs.frozen
class Ticket:
    """What a client asked for. ``start_ledger`` None: live, from the next commit on."""

    start_ledger: int | None
    end_ledger: int  # 0: no end
    schema: str
    row_filter: RowFilter


def parse_ticket(raw: bytes, schemas: Sequence[str], compat_schema: str | None) -> Ticket:
    """The original's fixed ticket, or a JSON object; anything else is a ``TicketError``."""
    if raw == COMPAT_TICKET and compat_schema is not None:
        return Ticket(None, 0, compat_schema, RowFilter())
    try:
        spec = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        spec = None
    if not isinstance(spec, dict):
        known = f"{COMPAT_TICKET.decode()!r} or " if compat_schema is not None else ""
        raise TicketError(
            f'unknown ticket {raw[:80]!r}: expected {known}a JSON object such as {{"start_ledger": 1000}}'
        )
    unknown = sorted(set(spec) - {"start_ledger", "end_ledger", "schema"} - _FILTER_KEYS)
    if unknown:
        raise TicketError(f"ticket: unknown key(s) {', '.join(unknown)}")
    start, end = spec.get("start_ledger"), spec.get("end_ledger", 0)
    for name, value in (("start_ledger", start), ("end_ledger", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32_MAX):
            raise TicketError(f"ticket: {name}={value!r} must be a ledger sequence (0..{U32_MAX})")
    if start is not None and start < 1:
        raise TicketError("ticket: start_ledger must be >= 1")
    if end and start is not None and end < start:
        raise TicketError(f"ticket: end_ledger={end} is before start_ledger={start}")
    schema = spec.get("schema", schemas[0])
    if schema not in schemas:
        raise TicketError(f"ticket: schema={schema!r}: this flight serves {' or '.join(schemas)}")
    try:
        given = {k: spec[k] for k in _FILTER_KEYS if k in spec}
        filters = Config.from_mapping(given, {k: k for k in given})
    except ConfigError as exc:
        raise TicketError(f"ticket: {exc}") from None
    return Ticket(start, end, schema, RowFilter.from_config(filters))


@attrs.define(eq=False)
class Client:
    ticket: Ticket
    peer: str
    cursor: int  # the next ledger this client gets
    attached: bool = False  # taking live commits into its buffer
    lagging: bool = False  # its buffer overflowed; catching up from the output
    buffer: deque[tuple[int, Sequence[Row], int]] = attrs.field(factory=deque)  # (ledger, rows, their bytes)
    held: int = 0  # the bytes of the rows in ``buffer``
    next_in: int = 0  # the next ledger its buffer takes
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    gone: bool = False  # set by its stream's thread when the call ends
    batches: int = 0  # counted by its stream's thread
    rows: int = 0


@attrs.frozen
class Live:
    first: int
    last: int
    items: list[tuple[int, Sequence[Row]]]


@attrs.frozen
class Replay:
    first: int
    last: int
    end_offset: int | None


@attrs.frozen
class Stop:
    """End the stream: cleanly (``error`` None) or with a Flight error of ``kind``."""

    kind: str = ""
    error: str | None = None


IDLE: Final = Stop("idle")
Step = Live | Replay | Stop


@attrs.frozen
class FlightStatistics:
    clients: int  # connected now
    lagging: int  # overflowed their buffer, catching up from the output
    replaying: int  # reading committed ledgers from the output (lagging ones included)
    overflows: int  # buffers that overflowed
    disconnected: int  # streams ended with an error (too slow with nothing retained, shutdown)
    batches_sent: int
    rows_sent: int


class FlightHub:
    """The Trio side: who is connected, what each has been given, and what the output holds."""

    def __init__(
        self, retained: Retained | None, last_committed: int, durable_offset: int | None, capacity: int,
        capacity_bytes: int = 64 << 20, max_clients: int = 32,
    ) -> None:  # fmt: skip
        self.capacity_bytes = capacity_bytes
        self.max_clients = max_clients
        self.retained = retained
        self.published = last_committed
        self.durable = last_committed
        self.durable_offset = durable_offset
        self.pending: deque[tuple[int, Sequence[Row]]] = deque()  # committed, not durable yet (Parquet)
        self.capacity = capacity
        self.clients: set[Client] = set()
        self.closing = False
        self.abandoned = False  # a call outlived the shutdown grace (a client that stopped reading)
        self._overflows = 0
        self._disconnected = 0
        self._retired_batches = 0
        self._retired_rows = 0

    def statistics(self) -> FlightStatistics:
        live = [c for c in self.clients if not c.gone]
        return FlightStatistics(
            clients=len(live),
            lagging=sum(c.lagging for c in live),
            replaying=sum(not c.attached for c in live),
            overflows=self._overflows,
            disconnected=self._disconnected,
            batches_sent=self._retired_batches + sum(c.batches for c in self.clients),
            rows_sent=self._retired_rows + sum(c.rows for c in self.clients),
        )

    def join(self, ticket: Ticket, peer: str) -> Client:
        """A new stream's client.

        Raises:
            TooManyClients: ``max_clients`` streams are being served (each holds a server thread and a
                buffer: without a cap, clients that never read would take the memory the pipeline needs).
        """
        for gone in [c for c in self.clients if c.gone]:
            self._retire(gone)
        if len(self.clients) >= self.max_clients:
            raise TooManyClients(f"FLIGHT_MAX_CLIENTS={self.max_clients} streams are being served: try again later")
        start = self.published + 1 if ticket.start_ledger is None else ticket.start_ledger
        client = Client(ticket, peer, start)
        if ticket.start_ledger is None:  # live from the next commit: take it even before the first step
            client.attached, client.next_in = True, start
        self.clients.add(client)
        LOG.info("flight client joined peer=%s start_ledger=%d end_ledger=%d schema=%s",
                 peer, start, ticket.end_ledger, ticket.schema)  # fmt: skip
        return client

    def on_commit(self, items: Sequence[tuple[int, Sequence[Row]]], durable: Durable | None) -> None:
        """The pipeline's commit listener: never waits, whatever the clients do. Rows the PostgreSQL
        sink's processor adds for its state table (TTLs, evictions: marked ``_kind``) are not served."""
        if any(KIND in r for _, rows in items for r in rows):
            items = [(seq, [r for r in rows if KIND not in r]) for seq, rows in items]
        for seq, _ in items:
            self.published = seq
        if self.retained is not None:
            self.pending.extend(items)
            if durable is not None:
                self.durable, self.durable_offset = durable.ledger, durable.offset
                while self.pending and self.pending[0][0] <= self.durable:
                    self.pending.popleft()
        else:
            self.durable = self.published
        sized: list[tuple[int, Sequence[Row], int]] | None = None  # measured once, for every client
        for client in list(self.clients):
            if client.gone:
                self._retire(client)
            elif client.attached and items:
                sized = sized or [(seq, rows, ledger_bytes(rows)) for seq, rows in items]
                self._feed(client, sized)

    def _feed(self, client: Client, items: Sequence[tuple[int, Sequence[Row], int]], bounded: bool = True) -> None:
        """Append ``items`` (ledger, rows, their bytes) to ``client``'s buffer; live ones (``bounded``) only
        up to its capacity in ledgers and in bytes, past which it is detached. Catching up from
        ``pending`` is not bounded: those rows are held anyway, and refusing them would detach the client
        again at once, with no progress."""
        end = client.ticket.end_ledger
        for seq, rows, size in items:
            if seq < client.next_in or (end and seq > end):
                continue
            if bounded and (len(client.buffer) >= self.capacity or client.held + size > self.capacity_bytes):
                client.attached, client.lagging = False, True
                client.buffer.clear()
                client.held = 0
                self._overflows += 1
                LOG.warning("flight client too slow peer=%s buffered=%d ledgers: catching up from ledger %d",
                            client.peer, self.capacity, client.cursor)  # fmt: skip
                break
            client.buffer.append((seq, rows, size))
            client.held += size
            client.next_in = seq + 1
        client.wakeup.set()

    def _retire(self, client: Client) -> None:
        self.clients.discard(client)
        self._retired_batches += client.batches
        self._retired_rows += client.rows
        client.batches = client.rows = 0
        LOG.info("flight client left peer=%s next_ledger=%d", client.peer, client.cursor)

    def leave(self, client: Client) -> None:
        client.gone = True
        self._retire(client)

    def close(self) -> None:
        """End every stream once it has what is committed (within the server's shutdown grace),
        telling its client where to resume."""
        self.closing = True
        for client in self.clients:
            client.wakeup.set()

    async def next_step(self, client: Client) -> Step:
        """What ``client``'s stream does next: live rows, a replay from the output, or its end.
        Returns ``IDLE`` after ``WAIT_S`` with nothing to do, so the stream can see a closed call."""
        with trio.move_on_after(WAIT_S):
            while True:
                end = client.ticket.end_ledger
                if end and client.cursor > end:
                    return Stop()
                if client.buffer:
                    return self._drain(client)
                if self.closing and client.cursor > self.published:  # all it can get now, it has
                    self._disconnected += 1
                    return Stop("unavailable", f"cdp is stopping: resume from ledger {client.cursor}")
                if not client.attached:
                    step = self._catch_up(client)
                    if step is not None:
                        return step
                    continue
                client.wakeup = trio.Event()
                await client.wakeup.wait()
        return IDLE

    def _drain(self, client: Client) -> Live:
        items: list[tuple[int, Sequence[Row]]] = []
        rows = 0
        while client.buffer and (not items or rows + len(client.buffer[0][1]) <= BATCH_ROWS):
            seq, ledger_rows, size = client.buffer.popleft()
            items.append((seq, ledger_rows))
            rows += len(ledger_rows)
            client.held -= size
        first, client.cursor = client.cursor, items[-1][0] + 1
        return Live(first, items[-1][0], items)

    def _catch_up(self, client: Client) -> Step | None:
        """A detached client: replay what is durable, take what is committed but not yet durable
        from ``pending``, then attach to the live commits (None: attached, look again)."""
        c, end = client.cursor, client.ticket.end_ledger
        if self.retained is not None and c <= self.durable:
            last = min(self.durable, end) if end else self.durable
            client.cursor = last + 1
            return Replay(c, last, self.durable_offset)
        if c <= self.published and not (self.pending and self.pending[0][0] <= c):
            self._disconnected += 1
            where = "the stdout stream" if self.retained is None else "the output"
            if client.lagging:
                why = f"too slow: more than {self.capacity} ledgers behind the live stream"
            else:
                why = f"ledger {c} was committed before this request"
            return Stop("server", f"{why}, and {where} cannot be replayed: the last ledger you received is "
                                   f"{c - 1}; resume from ledger {c}")  # fmt: skip
        client.attached, client.lagging, client.next_in = True, False, c
        if self.pending:
            self._feed(client, [(s, rows, ledger_bytes(rows)) for s, rows in self.pending if s >= c], bounded=False)
        return None
