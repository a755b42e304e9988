"""Ordered fan-out/fan-in: ledgers go to worker processes and are committed strictly in order.

The dispatcher gives every ledger a slot in an ordered channel (bounded: the reorder window) and
hands it to the next free worker; the committer takes slots in ledger order, waits for each to be
done, writes its rows, makes them durable and only then moves the checkpoint. Nothing is dropped:
a full window stops intake, which stops the upstream (backpressure).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import trio
import trio_parallel

from cdp._config import Config
from cdp._errors import BadLedgerError, OutputError
from cdp.extract._ledger import Ledger
from cdp.extract._rows import Row
from cdp.ops._metrics import Metrics
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._work import RowFilter, WorkResult, process_ledger
from cdp.sinks import Durable, Sink

from ._budget import ByteBudget
from ._checkpoint import Checkpoint, write_checkpoint

LOG = logging.getLogger("cdp.pipeline")


@attrs.define(eq=False)
class _Slot:
    ledger: Ledger
    received_at: float
    done: trio.Event = attrs.field(factory=trio.Event)
    result: WorkResult | None = None
    error: str | None = None
    abandoned: bool = False  # intake stopped before a worker took it: never committed


@attrs.frozen
class PipelineStatistics:
    processed: int
    rows: int
    errors: int
    dead_lettered: int
    queue_depth: int
    reorder_in_use: int
    reorder_window: int
    last_committed_ledger: int | None
    last_commit_at: float | None  # trio clock
    processing_lag_s: float | None  # from receipt to commit, last ledger committed
    finished: bool


class Pipeline:
    def __init__(
        self,
        config: Config,
        processor: LedgerProcessor,
        sink: Sink,
        metrics: Metrics,
        *,
        checkpoint_path: Path | None,
        budget: ByteBudget | None = None,
    ) -> None:
        self.config = config
        self.processor = processor
        self.sink = sink
        self.metrics = metrics
        self.checkpoint_path = checkpoint_path
        self.row_filter = RowFilter.from_config(config)
        self.budget = budget
        # Worker processes: no more than cores (each holds ~75 MB); WORKER_COUNT tasks keep them fed.
        self.limiter = trio.CapacityLimiter(max(1, min(config.worker_count, os.cpu_count() or 1)))
        self.window = max(2 * config.worker_count, 4)
        self._order_send, self._order_recv = trio.open_memory_channel[_Slot](self.window)
        self._processed = 0
        self._rows = 0
        self._errors = 0
        self._dead = 0
        self._in_window = 0
        self._ledgers: trio.MemoryReceiveChannel[Ledger] | None = None
        self._committed_event = trio.Event()
        self._last: int | None = None
        self._last_at: float | None = None
        self._lag: float | None = None
        self.finished = trio.Event()
        self._intake = trio.CancelScope()
        self._events_logged: set[str] = set()

    def stop_intake(self) -> None:
        """Take no new ledgers; those already with workers are finished and committed."""
        self._intake.cancel("stop requested")

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            processed=self._processed,
            rows=self._rows,
            errors=self._errors,
            dead_lettered=self._dead,
            queue_depth=self._ledgers.statistics().current_buffer_used if self._ledgers else 0,
            reorder_in_use=self._in_window,
            reorder_window=self.window,
            last_committed_ledger=self._last,
            last_commit_at=self._last_at,
            processing_lag_s=self._lag,
            finished=self.finished.is_set(),
        )

    async def run(
        self,
        ledgers: trio.MemoryReceiveChannel[Ledger],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Process and commit until ``ledgers`` is closed and drained.

        Raises:
            BadLedgerError: with the ``stop`` policy, for the first ledger that fails.
            OSError: the sink or the checkpoint cannot be written.
        """
        self._ledgers = ledgers
        work_send, work_recv = trio.open_memory_channel[_Slot](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch, ledgers, work_send)
            for _ in range(self.config.worker_count):
                nursery.start_soon(self._work, work_recv.clone())
            work_recv.close()
            task_status.started()
            await self._commit()
        self.finished.set()

    async def _dispatch(self, ledgers: trio.MemoryReceiveChannel[Ledger], work: trio.MemorySendChannel[_Slot]) -> None:
        async with ledgers, work, self._order_send:
            with self._intake:
                async for ledger in ledgers:
                    slot = _Slot(ledger, trio.current_time())
                    await self._order_send.send(slot)
                    self._in_window += 1
                    try:
                        await work.send(slot)
                    except trio.Cancelled:
                        slot.abandoned = True
                        slot.done.set()
                        raise

    async def _work(self, slots: trio.MemoryReceiveChannel[_Slot]) -> None:
        async with slots:
            async for slot in slots:
                if slot.ledger.problem is not None:
                    slot.error = slot.ledger.problem
                    slot.done.set()
                    continue
                try:
                    if self.config.worker_mode == "process":
                        slot.result = await trio_parallel.run_sync(
                            process_ledger,
                            self.processor,
                            self.row_filter,
                            slot.ledger,
                            kill_on_cancel=True,
                            limiter=self.limiter,
                        )
                    else:
                        slot.result = await trio.to_thread.run_sync(
                            process_ledger, self.processor, self.row_filter, slot.ledger, abandon_on_cancel=True
                        )
                except trio_parallel.BrokenWorkerError as exc:
                    slot.error = f"worker process died: {exc}"
                except Exception as exc:  # a processor's failure is one ledger's problem, not ours
                    slot.error = f"{type(exc).__name__}: {exc}"
                slot.done.set()

    async def _commit(self) -> None:
        async with self._order_recv:
            async for slot in self._order_recv:
                await slot.done.wait()
                self._in_window -= 1
                if self.budget is not None:
                    self.budget.give_back(len(slot.ledger.raw))
                if slot.abandoned:
                    LOG.info("stopped before ledger=%d: not committed", slot.ledger.sequence)
                    break
                seq = slot.ledger.sequence
                if slot.error is not None:
                    await self._bad_ledger(slot.ledger, slot.error)
                    rows: Sequence[Row] = []
                else:
                    assert slot.result is not None
                    rows = slot.result.rows
                    for reason, count in slot.result.skipped.items():
                        self.metrics.rows_skipped.labels(reason).inc(count)
                    self._note_events(seq, slot.result.events)
                await self._checkpoint(await self._write(seq, rows))
                self._committed(slot, len(rows))
            try:
                durable = await self.sink.flush()
            except OSError as exc:
                raise OutputError("output", self.config.output, exc) from None
            await self._checkpoint(durable)

    async def _write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        try:
            return await self.sink.write(sequence, rows)
        except OSError as exc:  # disk full, file too large, I/O error: stop, the checkpoint is still right
            raise OutputError("output", self.config.output, exc) from None

    async def _checkpoint(self, durable: Durable | None) -> None:
        if durable is not None and self.checkpoint_path is not None:
            cp = Checkpoint(durable.ledger, durable.offset)
            try:
                await trio.to_thread.run_sync(write_checkpoint, self.checkpoint_path, cp)
            except OSError as exc:
                raise OutputError("checkpoint", self.checkpoint_path, exc) from None

    async def wait_committed(self, sequence: int) -> None:
        """Return once ``sequence`` (or a later ledger) has been committed."""
        while self._last is None or self._last < sequence:
            await self._committed_event.wait()

    def _committed(self, slot: _Slot, n_rows: int) -> None:
        ledger = slot.ledger
        self._processed += 1
        self._rows += n_rows
        self._last = ledger.sequence
        self._last_at = trio.current_time()
        m = self.metrics
        m.ledgers_processed.inc()
        m.contracts_found.inc(n_rows)
        m.last_committed_ledger.set(ledger.sequence)
        if slot.result is not None:
            m.ledger_processing_seconds.observe(slot.result.seconds)
        self._lag = self._last_at - slot.received_at
        if ledger.close_time is not None:
            m.ledger_end_to_end_seconds.observe(max(0.0, time.time() - ledger.close_time))
        self._committed_event.set()
        self._committed_event = trio.Event()
        if self._processed % self.config.progress_every == 0:
            LOG.info("progress ledger=%d processed=%d rows=%d", ledger.sequence, self._processed, self._rows)

    def _note_events(self, sequence: int, events: Mapping[str, int]) -> None:
        name = describe(self.processor)
        for event, count in events.items():
            self.metrics.processor_events.labels(name, event).inc(count)
            if event not in self._events_logged:
                self._events_logged.add(event)
                LOG.warning("processor event processor=%s event=%s ledger=%d (logged once)", name, event, sequence)

    async def _bad_ledger(self, ledger: Ledger, reason: str) -> None:
        name = describe(self.processor)
        self._errors += 1
        self.metrics.processing_errors.labels("bad_ledger").inc()
        self.metrics.processor_errors.labels(name).inc()
        if self.config.on_bad_ledger == "stop":
            raise BadLedgerError(ledger.sequence, name, reason)
        path = self.config.dead_letter_path or Path("cdp-dead-letter.jsonl")
        record = {
            "ledger": ledger.sequence,
            "processor": name,
            "error": reason,
            "ledger_close_meta_xdr": base64.b64encode(ledger.raw).decode(),
        }
        await trio.to_thread.run_sync(_append_line, path, json.dumps(record, sort_keys=True))
        self._dead += 1
        self.metrics.ledgers_skipped.inc()
        LOG.error(
            "bad ledger dead-lettered ledger=%d processor=%s error=%r path=%s", ledger.sequence, name, reason, path
        )


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
