"""The service: source, pipeline, sink and HTTP wired in one nursery, startable and stoppable.

``serve`` is the one entry point (``cdp run`` and embedders both use it); ``open_row_stream`` is
the same service as an async context manager yielding a channel of ``(sequence, rows)`` batches.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
import trio_asyncio

from cdp._config import Config
from cdp._errors import CdpError, ConfigError, NothingToDo, OutputError, leaves, unwrap_cdp_error
from cdp._validators import AUTO, network_name
from cdp._watch import Watched
from cdp.extract import Ledger, Row
from cdp.ops import ServiceView, create_app, serve_http
from cdp.pipeline import Pipeline, guard_run, read_checkpoint, verify_resume
from cdp.pipeline._workers import worker_mode
from cdp.processors import LedgerProcessor, describe, load_processor
from cdp.sinks import RowsCallback, Sink, open_sink, sink_type
from cdp.upstream import DatastoreSource, LedgerSource
from cdp.xdr._walker import WALKER

if TYPE_CHECKING:
    from cdp.sinks._flight_hub import FlightHub

LOG = logging.getLogger("cdp.service")


class ServiceState(enum.Enum):
    """Where a service is in its life; ``ServiceHandle.wait_state`` waits for one."""

    RUNNING = "running"
    STOPPING = "stopping"  # intake stopped, in-flight ledgers finishing (within SHUTDOWN_GRACE_S)
    CLOSING_HTTP = "closing_http"  # pipeline done; HTTP answers requests in flight, takes no new ones
    DONE = "done"


@attrs.define(eq=False)
class ServiceHandle:
    """What ``nursery.start(serve, ...)`` returns: the bound HTTP port, the state, a way to stop."""

    http_port: int
    start_ledger: int
    view: ServiceView
    flight_port: int | None = None  # the Arrow Flight server's port, when FLIGHT_PORT is set
    _flight: FlightHub | None = None
    _state: Watched[ServiceState] = attrs.field(factory=lambda: Watched(ServiceState.RUNNING))
    _stop: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Stop intake, finish in-flight ledgers (within ``shutdown_grace_s``) and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def state(self) -> ServiceState:
        return self._state.value

    async def wait_state(self, state: ServiceState) -> None:
        """Return once the service has reached ``state`` (or a later one)."""
        order = list(ServiceState)
        await self._state.wait_until(lambda s: order.index(s) >= order.index(state))

    @property
    def left_calls_open(self) -> bool:
        """An Arrow Flight client stopped reading and its call outlived the shutdown grace: pyarrow
        cannot end it, and would wait for it at interpreter exit; ``cdp run`` then exits at once."""
        return self._flight is not None and self._flight.abandoned

    async def wait_done(self) -> None:
        """Wait until ``serve`` has returned (or failed)."""
        await self.wait_state(ServiceState.DONE)


def _resume(config: Config, prefix: str) -> tuple[int, int | None, str | None]:
    """Where to start: after the checkpoint if there is one (checked against the output), else
    ``start_ledger``; and the network the rows before it were verified under."""
    if config.checkpoint_path is None:
        return config.start_ledger, None, None
    cp = read_checkpoint(config.checkpoint_path)
    if cp is None:
        return config.start_ledger, 0 if config.output != "-" else None, None
    verify_resume(config, cp, prefix)
    LOG.info("resuming from checkpoint ledger=%d output_offset=%s", cp.ledger, cp.output_offset)
    return cp.ledger + 1, cp.output_offset, cp.network


def _continuing(config: Config, network: str | None, where: str = "") -> tuple[Config, str]:
    """The source's settings when a checkpoint says which network the rows before it are of: a resumed
    output goes on under that one (``auto`` becomes it; another given network is refused); and how
    errors name it.

    Raises:
        ConfigError: NETWORK_PASSPHRASE names another network than the checkpoint's rows.
    """
    if network is None or config.network_passphrase == network:
        return config, ""
    where = where or f"CHECKPOINT_PATH={config.checkpoint_path}"
    if config.network_passphrase != AUTO:
        raise ConfigError(
            f"{where}: the rows before it are of {network_name(network)}, "
            f"not NETWORK_PASSPHRASE={network_name(config.network_passphrase)}"
        )
    claim = f"{network_name(network)}, the network of the rows before {where}"
    return attrs.evolve(config, network_passphrase=network), claim


def _probe_writable(directory: Path, setting: str, path: Path) -> None:
    """Fail at start, not at the first commit, when a file cannot be created there."""
    probe = directory / f".cdp-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CdpError(f"{setting}={path}: cannot write in {directory}: {exc.strerror or exc}") from None


async def serve(
    config: Config,
    *,
    on_rows: RowsCallback | None = None,
    processor: LedgerProcessor | None = None,
    task_status: trio.TaskStatus[ServiceHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``end_ledger`` is committed, ``stop()`` is called, or cancellation.

    Args:
        config: the settings (``Config.load`` builds them from file, environment and flags).
        on_rows: called with ``(sequence, rows)`` for every committed ledger, in order, instead of
            writing JSONL; may be sync or async. The checkpoint moves only after it returns.
        processor: per-ledger logic; defaults to contract-data extraction.

    Returns once streaming ends. ``task_status.started`` reports a ``ServiceHandle`` once the HTTP
    port is bound and the pipeline is wired. Opens a trio-asyncio loop if there is none.

    Raises:
        UpstreamError: the upstream refused the stream for good.
        BadLedgerError: a ledger failed and the policy is ``stop`` (the checkpoint stays before it).
        OutputError: rows or the checkpoint could not be written (the checkpoint stays on the last
            durable ledger).
        NothingToDo: ``END_LEDGER`` is committed already (a rerun of a finished range: a success).
        CdpError: the service cannot start (bad output, busy port).
    """
    with unwrap_cdp_error():
        if config.checkpoint_path is not None:
            _probe_writable(config.checkpoint_path.parent, "CHECKPOINT_PATH", config.checkpoint_path)
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(guard_run(config))  # one instance per checkpoint and output, for the whole run
            if trio_asyncio.current_loop.get() is None:
                await stack.enter_async_context(trio_asyncio.open_loop())
            await _serve(config, on_rows, processor, task_status)


async def _serve(
    config: Config,
    on_rows: RowsCallback | None,
    processor: LedgerProcessor | None,
    task_status: trio.TaskStatus[ServiceHandle],
) -> None:
    if config.decoder == "python" and WALKER != "python":
        raise ConfigError("DECODER=python: set it in the environment, where it is read when cdp is imported")
    processor = processor or load_processor(config.processor, config)
    sink: Sink
    source_config, claim = config, ""
    kind = sink_type(config) if on_rows is None else None
    if kind is not None and kind.capabilities.own_checkpoint:
        sink, processor, start = await _open_owning(config, kind, processor)
        source_config, claim = _continuing(config, getattr(sink, "network", None), f"OUTPUT={config.output}")
    else:
        start, resume_offset, network = _resume(config, describe(processor))
        source_config, claim = _continuing(config, network)
        if config.end_ledger and start > config.end_ledger:
            raise NothingToDo(f"nothing to do: the checkpoint is already at END_LEDGER={config.end_ledger}")
        opening = partial(
            open_sink,
            config,
            on_rows=on_rows,
            start=start,
            resume_offset=resume_offset,
            processor_name=describe(processor),
            columns=getattr(processor, "columns", None),
        )
        try:
            sink = await trio.to_thread.run_sync(opening)  # opening a FIFO waits for its reader
        except OSError as exc:
            raise CdpError(f"OUTPUT={config.output}: cannot open for writing: {exc.strerror or exc}") from None
    hub = _flight_hub(config, sink, processor, start) if config.flight_port is not None else None
    checkpoint_path = None if sink.capabilities.own_checkpoint else config.checkpoint_path
    on_commit = hub.on_commit if hub else None
    pipeline = Pipeline(config, processor, sink, checkpoint_path=checkpoint_path, on_commit=on_commit)
    if config.datastore_url:
        source: LedgerSource | DatastoreSource = DatastoreSource(
            source_config, start, network_claim=claim, prepare=pipeline.prepare
        )
    else:
        source = LedgerSource(source_config, start, network_claim=claim)
    view = ServiceView(source, pipeline, sink.name, flight=hub, sink_stats=getattr(sink, "statistics", None),
                       liveness_stall_s=config.liveness_stall_s, end_ledger=config.end_ledger)  # fmt: skip
    http_closing = trio.Event()
    handle: ServiceHandle | None = None
    try:
        async with trio.open_nursery() as nursery:
            http = partial(serve_http, max_connections=config.http_max_connections)
            port = await nursery.start(
                http, create_app(view), config.health_host, config.health_port, http_closing.wait
            )
            handle = ServiceHandle(port, start, view, flight=hub)
            flight_scope = trio.CancelScope()
            if hub is not None:
                handle.flight_port = await nursery.start(_serve_flight, config, hub, processor, flight_scope)
            try:
                await _stream(config, source, pipeline, view, handle, task_status)
            finally:
                handle._state.set(ServiceState.CLOSING_HTTP)
                flight_scope.cancel("service finished")  # every stream told where to resume
                http_closing.set()  # Hypercorn's graceful close: requests in flight get their answer
    finally:
        view.running = False
        sink.close()
        if handle is not None:
            handle._state.set(ServiceState.DONE)
        st = pipeline.statistics()
        LOG.info(
            "service stopped last_committed_ledger=%s processed=%d rows=%d errors=%d reconnects=%d",
            st.last_committed_ledger, st.processed, st.rows, st.errors, source.statistics().reconnects,
        )  # fmt: skip


async def _open_owning(
    config: Config, kind: type[Any], processor: LedgerProcessor
) -> tuple[Sink, LedgerProcessor, int]:
    """A sink holding its own checkpoint (a database, a table, files on object storage), the processor
    it takes (with TTL and eviction records where it keeps current state), and where to start: after
    the ledger the output says it holds."""
    if config.checkpoint_path is not None:
        LOG.warning("CHECKPOINT_PATH=%s is not used: OUTPUT=%s holds its own checkpoint", config.checkpoint_path,
                    config.output)  # fmt: skip
    if kind.capabilities.state_records:
        from cdp.processors._state import ContractStateProcessor

        processor = ContractStateProcessor.wrapping(processor)
    sink = kind.for_config(config, describe(processor), getattr(processor, "columns", None))
    try:
        last = await trio.to_thread.run_sync(sink.open, abandon_on_cancel=True)  # a stop at start does not wait
    except BaseException:
        sink.close()
        raise
    start = config.start_ledger if last is None else last + 1
    if last is not None:
        LOG.info("resuming from the output's checkpoint ledger=%d output=%s", last, sink.checkpoint_name)
    if config.end_ledger and start > config.end_ledger:
        sink.close()
        raise NothingToDo(f"nothing to do: the checkpoint is already at END_LEDGER={config.end_ledger}")
    return sink, processor, start


def _flight_hub(config: Config, sink: Sink, processor: LedgerProcessor, start: int) -> FlightHub:
    """The Arrow Flight hub, knowing which output it can replay committed ledgers from."""
    from cdp.sinks._flight import require_pyarrow_flight
    from cdp.sinks._flight_hub import FlightHub
    from cdp.sinks._parquet import ROW_TYPES
    from cdp.sinks._replay import Replayable, Retained

    require_pyarrow_flight()
    name = describe(processor)
    if name not in ROW_TYPES:
        raise ConfigError(f"FLIGHT_PORT: serves the rows of {' and '.join(ROW_TYPES)}, not of PROCESSOR={name}")
    retained: Retained | None = None
    offset: int | None = None
    if sink.capabilities.replay is not None:
        retained, offset = cast(Replayable, sink).retained(start)
    return FlightHub(retained, start - 1, offset, config.flight_client_buffer, config.flight_client_buffer_bytes,
                     config.flight_max_clients)  # fmt: skip


async def _serve_flight(
    config: Config,
    hub: FlightHub,
    processor: LedgerProcessor,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[int],
) -> None:
    from cdp.sinks._flight import Security, serve_flight
    from cdp.sinks._parquet import ROW_TYPES

    name = describe(processor)
    with scope:
        await serve_flight(
            hub, config.flight_host, config.flight_port or 0, processor_name=name, schema=config.schema,
            row_type=ROW_TYPES[name], columns=getattr(processor, "columns", None), grace_s=config.shutdown_grace_s,
            security=Security.from_config(config), task_status=task_status,
        )  # fmt: skip


async def _stream(
    config: Config,
    source: LedgerSource | DatastoreSource,
    pipeline: Pipeline,
    view: ServiceView,
    handle: ServiceHandle,
    task_status: trio.TaskStatus[ServiceHandle],
) -> None:
    """Source into pipeline until the pipeline is done; ``stop()`` puts one deadline on all of it."""
    # A rendezvous: the pipeline's intake holds the buffer, so its byte budget covers every ledger.
    send, receive = trio.open_memory_channel[Ledger](0)
    try:
        async with trio.open_nursery() as nursery:
            source_scope = trio.CancelScope()

            async def run_source() -> None:
                with source_scope:
                    await source.run(send)

            nursery.start_soon(run_source)
            await nursery.start(pipeline.run, receive)
            LOG.info(
                "service started start_ledger=%d end_ledger=%d http_port=%d flight_port=%s endpoints=%s network=%s "
                "workers=%d worker_mode=%s xdr_walker=%s", handle.start_ledger, config.end_ledger, handle.http_port,
                handle.flight_port, config.datastore_url or ",".join(config.source_endpoint),
                network_name(config.network_passphrase),
                config.worker_count, worker_mode(config, pipeline.processor), WALKER,
            )  # fmt: skip
            task_status.started(handle)

            async def stop_on_request() -> None:
                await handle._stop.wait()
                LOG.info("stop requested: finishing in-flight ledgers")
                handle._state.set(ServiceState.STOPPING)
                source_scope.cancel("stop requested")
                pipeline.stop_intake()
                nursery.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_s

            nursery.start_soon(stop_on_request)
            if config.bounded and sys.stderr.isatty():
                from cdp.ops._progress import show_progress

                nursery.start_soon(show_progress, pipeline, config.end_ledger - handle.start_ledger + 1, sys.stderr)
            await pipeline.finished.wait()
            nursery.cancel_scope.cancel("pipeline finished")
    except BaseExceptionGroup as group:
        errors = [e for e in leaves(group) if isinstance(e, CdpError)]
        if errors:
            view.fatal_error = str(errors[0])
            if isinstance(errors[0], OutputError):
                view.sink_error = view.fatal_error
        raise


@contextlib.asynccontextmanager
async def open_row_stream(
    config: Config, *, processor: LedgerProcessor | None = None
) -> AsyncIterator[trio.abc.ReceiveChannel[tuple[int, Sequence[Row]]]]:
    """The service as a channel of ``(sequence, rows)`` batches, in ledger order.

    Use as ``async with open_row_stream(config) as batches: async for sequence, rows in batches``.
    A batch is committed (checkpoint moved) once it has been handed over; leaving the block stops
    the service. Raises what ``serve`` raises.
    """
    with unwrap_cdp_error():
        async with _row_stream(config, processor=processor) as batches:
            yield batches


@trio.as_safe_channel
async def _row_stream(
    config: Config, *, processor: LedgerProcessor | None = None
) -> AsyncGenerator[tuple[int, Sequence[Row]], None]:
    send, receive = trio.open_memory_channel[tuple[int, Sequence[Row]]](0)

    async def deliver(sequence: int, rows: Sequence[Row]) -> None:
        await send.send((sequence, rows))

    async def run() -> None:
        async with send:
            await serve(config, on_rows=deliver, processor=processor)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        async with receive:
            async for batch in receive:
                yield batch
