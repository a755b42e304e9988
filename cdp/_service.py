"""The service: source, pipeline, sink and HTTP wired in one nursery, startable and stoppable.

``serve`` is the one entry point (``cdp run`` and embedders both use it); ``open_row_stream`` is
the same service as an async context manager yielding a channel of ``(sequence, rows)`` batches.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import attrs
import trio
import trio_asyncio

from cdp._config import Config
from cdp._errors import CdpError, OutputError
from cdp.extract._ledger import Ledger
from cdp.extract._rows import Row
from cdp.ops._http import ServiceView, create_app, serve_http
from cdp.ops._metrics import Metrics
from cdp.pipeline._budget import ByteBudget
from cdp.pipeline._checkpoint import read_checkpoint
from cdp.pipeline._pipeline import Pipeline
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._registry import load_processor
from cdp.sinks import RowsCallback, open_sink
from cdp.upstream._source import LedgerSource

LOG = logging.getLogger("cdp.service")


@attrs.define(eq=False)
class ServiceHandle:
    """What ``nursery.start(serve, ...)`` returns: the bound HTTP port and a way to stop."""

    http_port: int
    start_ledger: int
    view: ServiceView
    _stop: trio.Event
    _done: trio.Event

    def stop(self) -> None:
        """Stop intake, finish in-flight ledgers (within ``shutdown_grace_s``) and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def wait_done(self) -> None:
        """Wait until ``serve`` has returned (or failed)."""
        await self._done.wait()


def _resume(config: Config) -> tuple[int, int | None]:
    """Where to start: after the checkpoint if there is one, else ``start_ledger``."""
    if config.checkpoint_path is None:
        return config.start_ledger, None
    cp = read_checkpoint(config.checkpoint_path)
    if cp is None:
        return config.start_ledger, 0 if config.output != "-" else None
    LOG.info("resuming from checkpoint ledger=%d output_offset=%s", cp.ledger, cp.output_offset)
    return cp.ledger + 1, cp.output_offset


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
    port is bound and the pipeline is wired.

    Raises:
        UpstreamError: the upstream refused the stream for good.
        BadLedgerError: a ledger failed and the policy is ``stop`` (the checkpoint stays before it).
    """
    if trio_asyncio.current_loop.get() is None:
        async with trio_asyncio.open_loop():
            await _serve(config, on_rows, processor, task_status)
    else:
        await _serve(config, on_rows, processor, task_status)


async def _serve(
    config: Config,
    on_rows: RowsCallback | None,
    processor: LedgerProcessor | None,
    task_status: trio.TaskStatus[ServiceHandle],
) -> None:
    start, resume_offset = _resume(config)
    if config.end_ledger and start > config.end_ledger:
        raise CdpError(f"nothing to do: the checkpoint is already at END_LEDGER={config.end_ledger}")
    if config.checkpoint_path is not None:
        _probe_writable(config.checkpoint_path.parent, "CHECKPOINT_PATH", config.checkpoint_path)
    processor = processor or load_processor(config.processor, config)
    try:
        sink = open_sink(
            config, on_rows=on_rows, start=start, resume_offset=resume_offset, processor_name=describe(processor)
        )
    except OSError as exc:
        raise CdpError(f"OUTPUT={config.output}: cannot open for writing: {exc.strerror or exc}") from None
    metrics = Metrics()
    metrics.up.set(1)
    budget = ByteBudget(config.max_buffered_bytes)
    source = LedgerSource(config, start, budget)
    pipeline = Pipeline(
        config,
        processor,
        sink,
        metrics,
        checkpoint_path=config.checkpoint_path,
        budget=budget,
    )
    view = ServiceView(source, pipeline, sink.name, metrics)
    stop = trio.Event()
    done = trio.Event()
    http_done = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serve_http, create_app(view), config.health_host, config.health_port, http_done.wait
            )
            send, receive = trio.open_memory_channel[Ledger](config.channel_buffer_size)
            intake = trio.CancelScope()

            async def run_source() -> None:
                with intake:
                    await source.run(send)
                send.close()

            nursery.start_soon(run_source)
            with trio.CancelScope() as drain:
                await nursery.start(_run_pipeline, pipeline, receive, view)
                LOG.info(
                    "service started start_ledger=%d end_ledger=%d http_port=%d endpoints=%s workers=%d",
                    start, config.end_ledger, port, ",".join(config.source_endpoint), config.worker_count,
                )  # fmt: skip
                task_status.started(ServiceHandle(port, start, view, stop, done))

                async def watch_stop() -> None:
                    await stop.wait()
                    LOG.info("stop requested: finishing in-flight ledgers")
                    intake.cancel()
                    pipeline.stop_intake()
                    drain.deadline = trio.current_time() + config.shutdown_grace_s

                nursery.start_soon(watch_stop)
                if config.bounded and sys.stderr.isatty():
                    from cdp.ops._progress import show_progress

                    nursery.start_soon(show_progress, pipeline, config.end_ledger - start + 1, sys.stderr)
                await pipeline.finished.wait()
            http_done.set()
            nursery.cancel_scope.cancel()
    finally:
        done.set()
        sink.close()
        metrics.up.set(0)
        st = pipeline.statistics()
        LOG.info(
            "service stopped last_committed_ledger=%s processed=%d rows=%d errors=%d reconnects=%d",
            st.last_committed_ledger, st.processed, st.rows, st.errors, source.statistics().reconnects,
        )  # fmt: skip


async def _run_pipeline(
    pipeline: Pipeline,
    receive: trio.MemoryReceiveChannel[Ledger],
    view: ServiceView,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await pipeline.run(receive, task_status=task_status)
    except OutputError as exc:
        view.sink_error = view.fatal_error = str(exc)
        raise
    except CdpError as exc:
        view.fatal_error = str(exc)
        raise


@trio.as_safe_channel
async def open_row_stream(
    config: Config, *, processor: LedgerProcessor | None = None
) -> AsyncGenerator[tuple[int, Sequence[Row]], None]:
    """The service as a channel of ``(sequence, rows)`` batches, in ledger order.

    Use as ``async with open_row_stream(config) as batches: async for sequence, rows in batches``.
    A batch is committed (checkpoint moved) once it has been handed over; leaving the block stops
    the service.
    """
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
