"""Arrow Flight for downstream services (``FLIGHT_PORT``; pyarrow from the ``flight`` extra).

Compatible with the original service's clients: descriptor path ``["contract", "data"]``, its
18-column ``ttp`` schema, and the ticket ``contract-data-stream``: live rows from now on. A JSON
ticket, ``{"start_ledger": N, "end_ledger": M, "schema": "full", "filter_contract_ids": [...]}``
(every key optional; the filters are ``FILTER_*``/``INCLUDE_DELETED`` settings, lower case), first
replays committed ledgers from the service's own output, then follows live commits: no gap and no
duplicate at the seam. Each record batch's ``app_metadata`` is ``{"first_ledger": a, "last_ledger":
b}``: it holds every row of ledgers a..b (ledgers without rows included), so a client resumes at b + 1.

No silent loss and no stalled pipeline: a commit is appended to each client's bounded buffer
without waiting; a client whose buffer is full is detached and catches up from the output, or,
where nothing is retained (stdout, callbacks), is disconnected with an error naming the ledger to
resume from.

pyarrow's gRPC server runs the handlers in its own threads; they reach the hub only through
``trio.from_thread`` with the service's token, so the hub's state is only ever changed in Trio.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, Final

import attrs
import trio

from cdp._config import Config
from cdp._errors import CdpError, ConfigError
from cdp._validators import U32_MAX
from cdp.extract import Row
from cdp.processors import RowFilter

from ._base import Durable
from ._replay import ReplayError, Retained, committed_ledgers

LOG = logging.getLogger("cdp.flight")

try:
    import pyarrow as pa
    import pyarrow.flight as flight
except ImportError:  # pragma: no cover - exercised only without the extra
    pa = None
    flight = None

COMPAT_TICKET: Final = b"contract-data-stream"
WAIT_S: Final = 0.5  # a waiting stream looks up this often whether its client has gone
BATCH_ROWS: Final = 10_000  # rows per record batch, at most (a ledger is never split)
_FILTER_KEYS: Final = frozenset(
    ("filter_contract_ids", "filter_asset_codes", "filter_asset_issuers", "filter_key_types",
     "filter_durability", "filter_balance_holders", "include_deleted")
)  # fmt: skip


def require_pyarrow_flight() -> None:
    if flight is None:
        raise ConfigError("FLIGHT_PORT: needs pyarrow: pip install 'contract-data-processor[flight]'")


class TicketError(ValueError):
    """A ticket this server cannot serve; the message says why."""


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
class _Client:
    ticket: Ticket
    peer: str
    cursor: int  # the next ledger this client gets
    attached: bool = False  # taking live commits into its buffer
    lagging: bool = False  # its buffer overflowed; catching up from the output
    buffer: deque[tuple[int, Sequence[Row]]] = attrs.field(factory=deque)
    next_in: int = 0  # the next ledger its buffer takes
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    gone: bool = False  # set by its stream's thread when the call ends
    batches: int = 0  # counted by its stream's thread
    rows: int = 0


@attrs.frozen
class _Live:
    first: int
    last: int
    items: list[tuple[int, Sequence[Row]]]


@attrs.frozen
class _Replay:
    first: int
    last: int
    end_offset: int | None


@attrs.frozen
class _Stop:
    """End the stream: cleanly (``error`` None) or with a Flight error of ``kind``."""

    kind: str = ""
    error: str | None = None


_IDLE: Final = _Stop("idle")
Step = _Live | _Replay | _Stop


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

    def __init__(self, retained: Retained | None, last_committed: int, durable_offset: int | None, capacity: int):
        self.retained = retained
        self.published = last_committed
        self.durable = last_committed
        self.durable_offset = durable_offset
        self.pending: deque[tuple[int, Sequence[Row]]] = deque()  # committed, not durable yet (Parquet)
        self.capacity = capacity
        self.clients: set[_Client] = set()
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

    def join(self, ticket: Ticket, peer: str) -> _Client:
        start = self.published + 1 if ticket.start_ledger is None else ticket.start_ledger
        client = _Client(ticket, peer, start)
        if ticket.start_ledger is None:  # live from the next commit: take it even before the first step
            client.attached, client.next_in = True, start
        self.clients.add(client)
        LOG.info("flight client joined peer=%s start_ledger=%d end_ledger=%d schema=%s",
                 peer, start, ticket.end_ledger, ticket.schema)  # fmt: skip
        return client

    def on_commit(self, items: Sequence[tuple[int, Sequence[Row]]], durable: Durable | None) -> None:
        """The pipeline's commit listener: never waits, whatever the clients do."""
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
        for client in list(self.clients):
            if client.gone:
                self._retire(client)
            elif client.attached and items:
                self._feed(client, items)

    def _feed(self, client: _Client, items: Sequence[tuple[int, Sequence[Row]]]) -> None:
        end = client.ticket.end_ledger
        for seq, rows in items:
            if seq < client.next_in or (end and seq > end):
                continue
            if len(client.buffer) >= self.capacity:
                client.attached, client.lagging = False, True
                client.buffer.clear()
                self._overflows += 1
                LOG.warning("flight client too slow peer=%s buffered=%d ledgers: catching up from ledger %d",
                            client.peer, self.capacity, client.cursor)  # fmt: skip
                break
            client.buffer.append((seq, rows))
            client.next_in = seq + 1
        client.wakeup.set()

    def _retire(self, client: _Client) -> None:
        self.clients.discard(client)
        self._retired_batches += client.batches
        self._retired_rows += client.rows
        client.batches = client.rows = 0
        LOG.info("flight client left peer=%s next_ledger=%d", client.peer, client.cursor)

    def leave(self, client: _Client) -> None:
        client.gone = True
        self._retire(client)

    def close(self) -> None:
        """End every stream once it has what is committed (within the server's shutdown grace),
        telling its client where to resume."""
        self.closing = True
        for client in self.clients:
            client.wakeup.set()

    async def next_step(self, client: _Client) -> Step:
        """What ``client``'s stream does next: live rows, a replay from the output, or its end.
        Returns ``_IDLE`` after ``WAIT_S`` with nothing to do, so the stream can see a closed call."""
        with trio.move_on_after(WAIT_S):
            while True:
                end = client.ticket.end_ledger
                if end and client.cursor > end:
                    return _Stop()
                if client.buffer:
                    return self._drain(client)
                if self.closing and client.cursor > self.published:  # all it can get now, it has
                    self._disconnected += 1
                    return _Stop("unavailable", f"cdp is stopping: resume from ledger {client.cursor}")
                if not client.attached:
                    step = self._catch_up(client)
                    if step is not None:
                        return step
                    continue
                client.wakeup = trio.Event()
                await client.wakeup.wait()
        return _IDLE

    def _drain(self, client: _Client) -> _Live:
        items: list[tuple[int, Sequence[Row]]] = []
        rows = 0
        while client.buffer and (not items or rows + len(client.buffer[0][1]) <= BATCH_ROWS):
            item = client.buffer.popleft()
            items.append(item)
            rows += len(item[1])
        first, client.cursor = client.cursor, items[-1][0] + 1
        return _Live(first, items[-1][0], items)

    def _catch_up(self, client: _Client) -> Step | None:
        """A detached client: replay what is durable, take what is committed but not yet durable
        from ``pending``, then attach to the live commits (None: attached, look again)."""
        c, end = client.cursor, client.ticket.end_ledger
        if self.retained is not None and c <= self.durable:
            last = min(self.durable, end) if end else self.durable
            client.cursor = last + 1
            return _Replay(c, last, self.durable_offset)
        if c <= self.published and not (self.pending and self.pending[0][0] <= c):
            self._disconnected += 1
            where = "the stdout stream" if self.retained is None else "the output"
            if client.lagging:
                why = f"too slow: more than {self.capacity} ledgers behind the live stream"
            else:
                why = f"ledger {c} was committed before this request"
            return _Stop("server", f"{why}, and {where} cannot be replayed: the last ledger you received is "
                                   f"{c - 1}; resume from ledger {c}")  # fmt: skip
        client.attached, client.lagging, client.next_in = True, False, c
        if self.pending:
            self._feed(client, [item for item in self.pending if item[0] >= c])
        return None


class _Server(flight.FlightServerBase if flight is not None else object):  # type: ignore[misc]
    """The handlers, in pyarrow's threads."""

    def __init__(
        self, location: str, hub: FlightHub, token: trio.lowlevel.TrioToken, flights: dict[tuple[str, ...], Any],
        schemas: dict[str, Any], compat_schema: str | None, row_type: type | None, columns: Sequence[str] | None,
    ) -> None:  # fmt: skip
        super().__init__(location)
        self.hub = hub
        self.token = token
        self.flights = flights  # descriptor path -> (schema name, ticket bytes)
        self.schemas = schemas
        self.compat_schema = compat_schema
        self.row_type = row_type
        self.columns = columns

    def _info(self, path: tuple[str, ...]) -> Any:
        schema_name, ticket = self.flights[path]
        descriptor = flight.FlightDescriptor.for_path(*path)
        endpoint = flight.FlightEndpoint(ticket, [])
        return flight.FlightInfo(self.schemas[schema_name], descriptor, [endpoint], -1, -1)

    def _path(self, descriptor: Any) -> tuple[str, ...]:
        path = tuple(p.decode() if isinstance(p, bytes) else p for p in (descriptor.path or ()))
        if descriptor.descriptor_type != flight.DescriptorType.PATH or path not in self.flights:
            known = " or ".join(json.dumps(list(p)) for p in self.flights)
            raise flight.FlightServerError(f"unknown flight {descriptor!r}: this server has the path {known}")
        return path

    def list_flights(self, context: Any, criteria: Any) -> Iterator[Any]:
        for path in self.flights:
            yield self._info(path)

    def get_flight_info(self, context: Any, descriptor: Any) -> Any:
        return self._info(self._path(descriptor))

    def get_schema(self, context: Any, descriptor: Any) -> Any:
        schema_name, _ = self.flights[self._path(descriptor)]
        return flight.SchemaResult(self.schemas[schema_name])

    def do_get(self, context: Any, ticket: Any) -> Any:
        try:
            request = parse_ticket(ticket.ticket, list(self.schemas), self.compat_schema)
        except TicketError as exc:
            raise flight.FlightServerError(str(exc)) from None
        try:
            client = trio.from_thread.run_sync(self.hub.join, request, context.peer(), trio_token=self.token)
        except trio.RunFinishedError:
            raise flight.FlightUnavailableError("cdp is stopping") from None
        return flight.GeneratorStream(self.schemas[request.schema], self._stream(context, client))

    def _stream(self, context: Any, client: _Client) -> Iterator[tuple[Any, bytes]]:
        try:
            while True:
                try:
                    step = trio.from_thread.run(self.hub.next_step, client, trio_token=self.token)
                except (trio.RunFinishedError, trio.Cancelled):
                    raise flight.FlightUnavailableError(f"cdp stopped: resume from ledger {client.cursor}") from None
                if step is _IDLE:
                    if context.is_cancelled():
                        return
                elif isinstance(step, _Stop):
                    if step.error is None:
                        return
                    LOG.warning("flight client disconnected peer=%s reason=%r", client.peer, step.error)
                    kind = flight.FlightUnavailableError if step.kind == "unavailable" else flight.FlightServerError
                    raise kind(step.error)
                elif isinstance(step, _Replay):
                    yield from self._replayed(client, step)
                else:
                    yield self._batch(client, step.first, step.last, [r for _, rows in step.items for r in rows])
        finally:
            client.gone = True

    def _replayed(self, client: _Client, step: _Replay) -> Iterator[tuple[Any, bytes]]:
        assert self.hub.retained is not None
        first, rows = step.first, list[Row]()
        try:
            for seq, ledger_rows in committed_ledgers(self.hub.retained, step.first, step.last, step.end_offset):
                if len(rows) + len(ledger_rows) > BATCH_ROWS and rows:
                    yield self._batch(client, first, seq - 1, rows)
                    first, rows = seq, []
                rows.extend(ledger_rows)
        except ReplayError as exc:
            raise flight.FlightServerError(f"cannot replay from ledger {step.first}: {exc}") from None
        yield self._batch(client, first, step.last, rows)

    def _batch(self, client: _Client, first: int, last: int, rows: Sequence[Row]) -> tuple[Any, bytes]:
        from ._parquet import to_table

        keep = client.ticket.row_filter
        kept = [r for r in rows if keep.reason_to_skip(r) is None]
        schema = self.schemas[client.ticket.schema]
        table = to_table(kept, client.ticket.schema, self.row_type, self.columns)
        batches = table.combine_chunks().to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=schema)
        client.batches += 1
        client.rows += len(kept)
        return batch, json.dumps({"first_ledger": first, "last_ledger": last}).encode()


async def serve_flight(
    hub: FlightHub,
    host: str,
    port: int,
    *,
    processor_name: str,
    schema: str,
    row_type: type | None,
    columns: Sequence[str] | None,
    grace_s: float = 3.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` over Arrow Flight until cancelled; reports the bound port. On the way out every
    stream gets what is committed, then an error telling its client where to resume; calls still
    open after ``grace_s`` (a client that stopped reading) are left behind (``hub.abandoned``).

    Raises:
        CdpError: the port cannot be bound.
    """
    require_pyarrow_flight()
    from ._parquet import to_table

    names: tuple[str, ...]
    if processor_name == "contract_data":
        names, compat = ("ttp", "full"), "ttp"
        flights = {
            ("contract", "data"): ("ttp", COMPAT_TICKET),
            ("contract", "data", "full"): ("full", b'{"schema":"full"}'),
        }
        if schema == "ttp" and hub.retained is not None and hub.retained.kind == "parquet":
            names, flights = ("ttp",), {("contract", "data"): ("ttp", COMPAT_TICKET)}  # what the files hold
    else:
        names, compat = ("full",), None
        flights = {(processor_name,): ("full", b'{"schema":"full"}')}
    schemas = {name: to_table([], name, row_type, columns).schema for name in names}
    token = trio.lowlevel.current_trio_token()
    make = partial(_Server, f"grpc://{host}:{port}", hub, token, flights, schemas, compat, row_type, columns)
    try:
        server = await trio.to_thread.run_sync(make)
    except Exception as exc:  # pyarrow reports a busy port as ArrowException/OSError
        raise CdpError(f"FLIGHT_PORT={port}: cannot listen on {host}:{port}: {exc}") from None
    try:
        task_status.started(int(server.port))
        await trio.sleep_forever()
    finally:
        hub.close()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + grace_s
            await trio.to_thread.run_sync(server.shutdown, abandon_on_cancel=True)
        if scope.cancelled_caught:
            hub.abandoned = True
            LOG.error("flight server: a client stopped reading and holds its call open; not waiting for it")
