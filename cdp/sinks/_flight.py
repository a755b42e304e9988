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

import hmac
import json
import logging
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from cdp._config import Config
from cdp._errors import CdpError, ConfigError, missing_extra
from cdp.extract import Row

from ._flight_hub import (
    BATCH_ROWS,
    COMPAT_TICKET,
    IDLE,
    Client,
    FlightHub,
    Replay,
    Stop,
    TicketError,
    TooManyClients,
    parse_ticket,
)
from ._parquet import to_table
from ._replay import ReplayError, committed_ledgers

LOG = logging.getLogger("cdp.flight")

try:
    import pyarrow as pa
    import pyarrow.flight as flight
except ImportError:  # pragma: no cover - exercised only without the extra
    pa = None
    flight = None


def require_pyarrow_flight() -> None:
    if flight is None:
        raise missing_extra("FLIGHT_PORT", "flight", "pyarrow.flight")


@attrs.frozen
class Security:
    """Who may call, and over what: a bearer token (empty: anyone who can connect) and TLS (cert, key)."""

    token: str = attrs.field(default="", repr=False)
    tls: tuple[bytes, bytes] | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Security:
        """Raises ConfigError naming the file that cannot be read, or an empty token file."""
        token = config.flight_auth_token
        if config.flight_auth_token_file is not None:
            token = _read(config.flight_auth_token_file, "FLIGHT_AUTH_TOKEN_FILE").decode().strip()
            if not token:
                raise ConfigError(f"FLIGHT_AUTH_TOKEN_FILE={config.flight_auth_token_file}: is empty")
        tls = None
        if config.flight_tls_cert is not None and config.flight_tls_key is not None:
            tls = (_read(config.flight_tls_cert, "FLIGHT_TLS_CERT"), _read(config.flight_tls_key, "FLIGHT_TLS_KEY"))
        return cls(token, tls)

    @property
    def scheme(self) -> str:
        return "grpc+tls" if self.tls else "grpc"


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read it: {exc.strerror or exc}") from None


class _BearerAuth(flight.ServerMiddlewareFactory if flight is not None else object):  # type: ignore[misc]
    """Every call must carry ``authorization: Bearer TOKEN`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._want = f"Bearer {token}".encode()

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> None:
        given = [v.encode() if isinstance(v, str) else v for v in headers.get("authorization", [])]
        if not any(hmac.compare_digest(v, self._want) for v in given):
            raise flight.FlightUnauthenticatedError("this server needs the header authorization: Bearer <token>")


class _Server(flight.FlightServerBase if flight is not None else object):  # type: ignore[misc]
    """The handlers, in pyarrow's threads."""

    def __init__(
        self, location: str, hub: FlightHub, token: trio.lowlevel.TrioToken, flights: dict[tuple[str, ...], Any],
        schemas: dict[str, Any], compat_schema: str | None, row_type: type | None, columns: Sequence[str] | None,
        security: Security,
    ) -> None:  # fmt: skip
        middleware = {"auth": _BearerAuth(security.token)} if security.token else None
        tls = [flight.CertKeyPair(*security.tls)] if security.tls else None
        super().__init__(location, middleware=middleware, tls_certificates=tls)
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
        except TooManyClients as exc:
            raise flight.FlightUnavailableError(str(exc)) from None
        return flight.GeneratorStream(self.schemas[request.schema], self._stream(context, client))

    def _stream(self, context: Any, client: Client) -> Iterator[tuple[Any, bytes]]:
        try:
            while True:
                try:
                    step = trio.from_thread.run(self.hub.next_step, client, trio_token=self.token)
                except (trio.RunFinishedError, trio.Cancelled):
                    raise flight.FlightUnavailableError(f"cdp stopped: resume from ledger {client.cursor}") from None
                if step is IDLE:
                    if context.is_cancelled():
                        return
                elif isinstance(step, Stop):
                    if step.error is None:
                        return
                    LOG.warning("flight client disconnected peer=%s reason=%r", client.peer, step.error)
                    kind = flight.FlightUnavailableError if step.kind == "unavailable" else flight.FlightServerError
                    raise kind(step.error)
                elif isinstance(step, Replay):
                    yield from self._replayed(client, step)
                else:
                    yield self._batch(client, step.first, step.last, [r for _, rows in step.items for r in rows])
        finally:
            client.gone = True

    def _replayed(self, client: Client, step: Replay) -> Iterator[tuple[Any, bytes]]:
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

    def _batch(self, client: Client, first: int, last: int, rows: Sequence[Row]) -> tuple[Any, bytes]:
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
    security: Security | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` over Arrow Flight until cancelled; reports the bound port. On the way out every
    stream gets what is committed, then an error telling its client where to resume; calls still
    open after ``grace_s`` (a client that stopped reading) are left behind (``hub.abandoned``).

    Raises:
        CdpError: the port cannot be bound.
    """
    require_pyarrow_flight()
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
    security = security or Security()
    location = f"{security.scheme}://{host}:{port}"
    make = partial(_Server, location, hub, token, flights, schemas, compat, row_type, columns, security)
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
