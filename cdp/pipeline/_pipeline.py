"""Ordered fan-out/fan-in: ledgers go to workers and are committed strictly in ledger order.

Intake reserves each ledger's bytes from the pipeline's one budget and queues it (at most
``CHANNEL_BUFFER_SIZE``); the dispatcher gives it a slot in an ordered channel (bounded: the
reorder window) and hands it to the next free worker; the committer takes slots in ledger order,
waits for each to be done, writes its rows, makes them durable, moves the checkpoint and only then
releases the ledger's bytes. Nothing is dropped: a full budget, queue or window stops intake, which
stops the upstream (backpressure).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from cdp._config import Config
from cdp._errors import BadLedgerError, OutputError
from cdp._watch import Watched
from cdp.extract import Ledger, Row
from cdp.extract._rows import STATE_KIND
from cdp.processors import LedgerProcessor, RowFilter, WorkResult, describe
from cdp.processors._work import dead_letter_record
from cdp.sinks import Durable, Sink

from ._budget import ByteBudget, Reservation
from ._checkpoint import Checkpoint, write_checkpoint
from ._latency import Histogram, HistogramSnapshot
from ._workers import Processed, Workers, WorkRunner, open_workers, preparer

LOG = logging.getLogger("cdp.pipeline")
GROUP_MAX: Final = 64  # ledgers committed with one write, one fsync and one checkpoint, at most

# Told of every committed group, in order, with what is durable now (e.g. the Arrow Flight hub).
CommitListener = Callable[[Sequence[tuple[int, Sequence[Row]]], Durable | None], None]


@attrs.define(eq=False)
class _Slot:
    ledger: Ledger
    received_at: float
    reservation: Reservation
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
    queue_depth: int  # ledgers taken in, waiting for a worker
    buffered_bytes: int  # ledger bytes held from intake to commit
    reorder_in_use: int
    reorder_window: int
    last_committed_ledger: int | None
    last_commit_at: float | None  # trio clock
    progress_at: float | None  # trio clock: the last commit, or when work reached the pipeline idle
    processing_lag_s: float | None  # from receipt to commit, last ledger committed
    close_lag_s: float | None  # from its close (wall clock) to its commit, last ledger committed with a close time
    finished: bool
    processor: str
    worker_deaths: int  # worker processes that died holding a ledger (each ledger retried)
    rows_skipped: Mapping[str, int]  # by filter
    processor_events: Mapping[str, int]  # e.g. fast_path_fallback
    processing_seconds: HistogramSnapshot  # worker time per ledger
    commit_seconds: HistogramSnapshot  # receipt to commit, every ledger (history and live alike)


class Pipeline:
    def __init__(
        self,
        config: Config,
        processor: LedgerProcessor,
        sink: Sink,
        *,
        checkpoint_path: Path | None,
        run_work: WorkRunner | None = None,
        on_commit: CommitListener | None = None,
    ) -> None:
        """``run_work`` replaces the worker processes or threads ``WORKER_MODE`` picks (tests use a
        Trio-native one to control timing); ``on_commit`` is called, without waiting, after each group
        of ledgers is written and checkpointed, and after the final flush (with no ledgers)."""
        self.config = config
        self.processor = processor
        self.processor_name = describe(processor)
        self.sink = sink
        self.checkpoint_path = checkpoint_path
        self.row_filter = RowFilter.from_config(config)
        self.budget = ByteBudget(config.max_buffered_bytes)
        self.window = max(2 * config.worker_count, 4)
        self._queue_send, self._queue_recv = trio.open_memory_channel[_Slot](config.channel_buffer_size)
        self._order_send, self._order_recv = trio.open_memory_channel[_Slot](self.window)
        self._processed = 0
        self._rows = 0
        self._errors = 0
        self._dead = 0
        self._in_window = 0
        self._skipped: dict[str, int] = {}
        self._events: dict[str, int] = {}
        self._processing = Histogram()
        self._commit_latency = Histogram()
        self._close_lag: float | None = None
        self._last: Watched[int | None] = Watched(None)
        self._last_at: float | None = None
        self._progress_at: float | None = None
        self._network: str | None = None  # what the committed ledgers were verified under, for the checkpoint
        self._lag: float | None = None
        self.finished = trio.Event()
        self._intake = trio.CancelScope()
        self._run_work = run_work
        self._on_commit = on_commit
        self._workers: Workers | None = None
        # For a source to run on each ledger where it fetched it (a ledger it returns needs no worker).
        self.prepare = None if run_work else preparer(config, processor, self.row_filter)

    def stop_intake(self) -> None:
        """Take no new ledgers; those already with workers are finished and committed."""
        self._intake.cancel("stop requested")

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            processed=self._processed,
            rows=self._rows,
            errors=self._errors,
            dead_lettered=self._dead,
            queue_depth=self._queue_recv.statistics().current_buffer_used,
            buffered_bytes=self.budget.used,
            reorder_in_use=self._in_window,
            reorder_window=self.window,
            last_committed_ledger=self._last.value,
            last_commit_at=self._last_at,
            progress_at=self._progress_at,
            processing_lag_s=self._lag,
            close_lag_s=self._close_lag,
            finished=self.finished.is_set(),
            processor=self.processor_name,
            worker_deaths=self._workers.deaths if self._workers is not None else 0,
            rows_skipped=dict(self._skipped),
            processor_events=dict(self._events),
            processing_seconds=self._processing.snapshot(),
            commit_seconds=self._commit_latency.snapshot(),
        )

    async def run(
        self,
        ledgers: trio.MemoryReceiveChannel[Ledger],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Process and commit until ``ledgers`` is closed and drained, or intake is stopped.

        Raises:
            BadLedgerError: with the ``stop`` policy, for the first ledger that fails.
            OutputError: the sink or the checkpoint cannot be written.
        """
        work_send, work_recv = trio.open_memory_channel[_Slot](0)
        workers = nullcontext(Workers(self._run_work)) if self._run_work else open_workers(self.config, self.processor)
        async with workers as self._workers, trio.open_nursery() as nursery:
            nursery.start_soon(self._intake_stage, ledgers, work_send)
            for _ in range(self.config.worker_count):
                nursery.start_soon(self._work, work_recv.clone())
            work_recv.close()
            task_status.started()
            await self._commit()
            nursery.cancel_scope.cancel("committer finished")
        self.finished.set()

    async def _intake_stage(
        self, ledgers: trio.MemoryReceiveChannel[Ledger], work: trio.MemorySendChannel[_Slot]
    ) -> None:
        """Take in and dispatch until the input ends or ``stop_intake`` cancels both."""
        with self._intake:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._take_in, ledgers)
                nursery.start_soon(self._dispatch, work)

    async def _take_in(self, ledgers: trio.MemoryReceiveChannel[Ledger]) -> None:
        async with ledgers, self._queue_send:
            async for ledger in ledgers:
                idle = self.budget.used == 0
                reservation = await self.budget.reserve(len(ledger.raw))
                try:
                    await self._queue_send.send(_Slot(ledger, trio.current_time(), reservation))
                except trio.Cancelled:
                    reservation.release()
                    raise
                if idle:  # work reached an idle pipeline: a stall is counted from now, not the last commit
                    self._progress_at = trio.current_time()

    async def _dispatch(self, work: trio.MemorySendChannel[_Slot]) -> None:
        async with self._queue_recv, work, self._order_send:
            try:
                async for slot in self._queue_recv:
                    try:
                        await self._order_send.send(slot)
                    except trio.Cancelled:
                        slot.reservation.release()
                        raise
                    self._in_window += 1
                    if isinstance(slot.ledger, Processed):
                        self._finish(slot, slot.ledger.result)
                        continue
                    try:
                        await work.send(slot)
                    except trio.Cancelled:
                        slot.abandoned = True
                        slot.done.set()
                        raise
            finally:
                self._release_queued()

    def _release_queued(self) -> None:
        """Ledgers still queued when intake stops are never committed: give their bytes back."""
        while True:
            try:
                self._queue_recv.receive_nowait().reservation.release()
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _work(self, slots: trio.MemoryReceiveChannel[_Slot]) -> None:
        async with slots:
            async for slot in slots:
                if slot.ledger.problem is not None:
                    slot.error = slot.ledger.problem
                    slot.done.set()
                    continue
                try:
                    assert self._workers is not None
                    result = await self._workers.run(self.processor, self.row_filter, slot.ledger)
                except Exception as exc:  # e.g. a ledger that killed 3 workers: still one ledger's problem
                    slot.error = f"{type(exc).__name__}: {exc}"
                    slot.done.set()
                else:
                    self._finish(slot, result)

    @staticmethod
    def _finish(slot: _Slot, result: WorkResult) -> None:
        slot.result = result
        slot.error = result.error
        slot.done.set()

    async def _commit(self) -> None:
        """Commit in ledger order. Ledgers already processed when the oldest is are committed with it,
        up to ``GROUP_MAX``: one write, one fsync and one checkpoint for the group (group commit: when
        ledgers arrive faster than the disk syncs, they do not queue behind one fsync each; live,
        groups are of one). A crash anywhere leaves the checkpoint at the end of a whole group."""
        ready: deque[_Slot] = deque()
        async with self._order_recv:
            while True:
                if not ready:
                    try:
                        ready.append(await self._order_recv.receive())
                    except trio.EndOfChannel:
                        break
                await ready[0].done.wait()
                while len(ready) < GROUP_MAX:
                    try:
                        ready.append(self._order_recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                group: list[_Slot] = []
                while ready and ready[0].done.is_set() and len(group) < GROUP_MAX:
                    group.append(ready.popleft())
                if not await self._commit_group(group):
                    break
            try:
                durable = await self.sink.flush()
            except OSError as exc:
                raise OutputError("output", self.config.output, exc) from None
            await self._checkpoint(durable)
            if self._on_commit is not None:
                self._on_commit((), durable)

    async def _commit_group(self, group: list[_Slot]) -> bool:
        """Commit ``group`` (processed slots, in order); False once a stop abandoned one of them."""
        items: list[tuple[int, Sequence[Row]]] = []
        slots: list[tuple[_Slot, int]] = []
        for slot in group:
            self._in_window -= 1
            if slot.abandoned:
                await self._write_group(items, slots)
                slot.reservation.release()
                LOG.info("stopped before ledger=%d: not committed", slot.ledger.sequence)
                return False
            seq = slot.ledger.sequence
            if slot.error is not None:
                if self.config.on_bad_ledger == "stop":
                    await self._write_group(items, slots)  # what precedes it is committed; it is not
                await self._bad_ledger(slot.ledger, slot.error)
                rows: Sequence[Row] = []
            else:
                assert slot.result is not None
                rows = slot.result.rows
                for reason, count in slot.result.skipped.items():
                    self._skipped[reason] = self._skipped.get(reason, 0) + count
                self._note_events(seq, slot.result.events)
            items.append((seq, rows))
            slots.append((slot, sum(1 for r in rows if STATE_KIND not in r)))  # rows, not TTL/eviction records
            self._network = slot.ledger.network or self._network  # before the group's checkpoint is written
            if self._network is not None and self.sink.capabilities.records_network:
                self.sink.set_network(self._network)  # type: ignore[attr-defined]
        await self._write_group(items, slots)
        return True

    async def _write_group(self, items: list[tuple[int, Sequence[Row]]], slots: list[tuple[_Slot, int]]) -> None:
        """Write and checkpoint ``items``: at once where the sink can (``write_many``), else one by one."""
        many = getattr(self.sink, "write_many", None) if self.sink.capabilities.group_commit else None
        done = list(zip(items, slots, strict=True))
        items.clear()
        slots.clear()
        if not done:
            return
        if many is None:
            for (seq, rows), (slot, n_rows) in done:
                durable = await self._sink_op(self.sink.write(seq, rows))
                await self._checkpoint(durable)
                slot.reservation.release()
                self._committed(slot, n_rows)
                if self._on_commit is not None:
                    self._on_commit([(seq, rows)], durable)
            return
        committed = [item for item, _ in done]
        durable = await self._sink_op(many(committed))
        await self._checkpoint(durable)
        for _, (slot, n_rows) in done:
            slot.reservation.release()
            self._committed(slot, n_rows)
        if self._on_commit is not None:
            self._on_commit(committed, durable)

    async def _sink_op(self, op: Awaitable[Durable | None]) -> Durable | None:
        try:
            return await op
        except OSError as exc:  # disk full, file too large, I/O error: stop, the checkpoint is still right
            raise OutputError("output", self.config.output, exc) from None

    async def _checkpoint(self, durable: Durable | None) -> None:
        if durable is not None and self.checkpoint_path is not None:
            cp = Checkpoint(durable.ledger, durable.offset, self._network)
            try:
                await trio.to_thread.run_sync(write_checkpoint, self.checkpoint_path, cp)
            except OSError as exc:
                raise OutputError("checkpoint", self.checkpoint_path, exc) from None

    async def wait_committed(self, sequence: int) -> None:
        """Return once ``sequence`` (or a later ledger) has been committed."""
        await self._last.wait_until(lambda last: last is not None and last >= sequence)

    def _committed(self, slot: _Slot, n_rows: int) -> None:
        ledger = slot.ledger
        self._processed += 1
        self._rows += n_rows
        self._last_at = self._progress_at = trio.current_time()
        if slot.result is not None and slot.error is None:  # a failed ledger's time is not a ledger's
            self._processing.observe(slot.result.seconds)
        self._lag = self._last_at - slot.received_at
        self._commit_latency.observe(self._lag)
        if ledger.close_time is not None:
            self._close_lag = max(0.0, time.time() - ledger.close_time)
        self._last.set(ledger.sequence)
        if self._processed % self.config.progress_every == 0:
            LOG.info("progress ledger=%d processed=%d rows=%d", ledger.sequence, self._processed, self._rows)

    def _note_events(self, sequence: int, events: Mapping[str, int]) -> None:
        for event, count in events.items():
            if event not in self._events:
                LOG.warning(
                    "processor event processor=%s event=%s ledger=%d (logged once)",
                    self.processor_name,
                    event,
                    sequence,
                )
            self._events[event] = self._events.get(event, 0) + count

    async def _bad_ledger(self, ledger: Ledger, reason: str) -> None:
        name = self.processor_name
        self._errors += 1
        if self.config.on_bad_ledger == "stop":
            raise BadLedgerError(ledger.sequence, name, reason)
        path = dead_letter_path(self.config)
        await trio.to_thread.run_sync(append_dead_letters, path, [dead_letter_record(ledger, name, reason)])
        self._dead += 1
        LOG.error(
            "bad ledger dead-lettered ledger=%d processor=%s error=%r path=%s", ledger.sequence, name, reason, path
        )


def dead_letter_path(config: Config) -> Path:
    return config.dead_letter_path or Path("cdp-dead-letter.jsonl")


def append_dead_letters(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append one JSON line per record and fsync: a dead letter is durable before its ledger counts
    as committed (by ``cdp run``) or its partition as done (by ``cdp backfill``)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
        f.flush()
        os.fsync(f.fileno())
