"""One partition's work, run by a Dask worker: read its ledgers from the store, extract, write one file.

Plain synchronous code, no event loop (a worker is one core, where every hand-off between an event
loop and threads is a context switch): the store is read by ``read_range``, which gives what the
service's datastore reader gives (retries, holes, corrupt files), and the rows come from
``process_ledger``, as in the service's workers, so a partition's file holds exactly what ``cdp run``
writes for those ledgers.
Errors come back in the result, not raised: the client turns them into the same ``CdpError`` the
service raises, which does not depend on an exception surviving Dask's pickling.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
from collections.abc import Iterator
from typing import Any

import attrs

from cdp._config import Config
from cdp._errors import CdpError, unwrap_cdp_error
from cdp._process import tune_gc, tune_malloc
from cdp.extract import Row
from cdp.extract._rows import STATE_KIND
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._work import RowFilter, dead_letter_record, process_ledger

from ._plan import Partition


@attrs.frozen
class PartitionJob:
    partition: Partition
    config: Config
    processor: LedgerProcessor
    directory: str
    fingerprint: str
    settings: dict[str, Any]


@attrs.frozen
class PartitionResult:
    partition: Partition
    rows: int
    seconds: float
    skipped: dict[str, int] = attrs.field(factory=dict)  # rows dropped by the filters, by reason
    dead_letters: list[dict[str, Any]] = attrs.field(factory=list)  # ON_BAD_LEDGER=skip
    bad_ledger: int | None = None  # ON_BAD_LEDGER=stop: the ledger that stopped the job ...
    error: str | None = None  # ... and why; or why the store could not be read (then bad_ledger is None)
    output_error: bool = False  # the error is the output's (its file could not be written)
    file: str | None = None  # where the partition's file was written (an Iceberg data file, committed by the client)


@attrs.frozen
class PartitionLedgers:
    """A partition's ledgers and their rows, for a client that writes them in order (PostgreSQL)."""

    partition: Partition
    ledgers: list[tuple[int, list[Row]]]  # every ledger read, a bad one with no rows
    seconds: float
    skipped: dict[str, int] = attrs.field(factory=dict)
    dead_letters: list[dict[str, Any]] = attrs.field(factory=list)
    bad_ledger: int | None = None  # as PartitionResult; ``ledgers`` then ends before it
    error: str | None = None

    @property
    def rows(self) -> int:
        """Rows, not the TTL and eviction records the PostgreSQL state processor adds beside them."""
        return sum(1 for _, rows in self.ledgers for row in rows if STATE_KIND not in row)


@contextlib.contextmanager
def without_cycle_collection() -> Iterator[None]:
    """The collector off while a partition's rows pile up and are written (a decorator of the tasks):
    rows hold no cycles, and each collection of the young generations would traverse every row made
    since the last (7% of a partition's time on one core); what cycles extraction leaves are
    collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _tune_worker() -> None:
    """The ``cdp`` command's process settings, once per worker process (``cdp._process``)."""
    tune_malloc()
    tune_gc()


@without_cycle_collection()
def collect_partition(job: PartitionJob) -> PartitionLedgers:
    """One partition's ledgers through the processor, returned rather than written; never raises for
    bad data."""
    _tune_worker()
    t0 = time.perf_counter()
    try:
        with unwrap_cdp_error():
            got = _collect(job)
    except CdpError as exc:
        return PartitionLedgers(job.partition, [], time.perf_counter() - t0, error=str(exc))
    return PartitionLedgers(
        job.partition, got.ledgers, time.perf_counter() - t0, got.skipped, got.dead, got.bad_ledger, got.error
    )


@attrs.define
class _Collected:
    started: float = attrs.field(factory=time.perf_counter)
    ledgers: list[tuple[int, list[Row]]] = attrs.field(factory=list)
    skipped: dict[str, int] = attrs.field(factory=dict)
    dead: list[dict[str, Any]] = attrs.field(factory=list)
    bad_ledger: int | None = None
    error: str | None = None

    def rows(self) -> list[Row]:
        """Every ledger's rows in ledger order, for a file (a database takes them ledger by ledger)."""
        return [row for _, rows in self.ledgers for row in rows]


def collect_rows(job: PartitionJob) -> _Collected | PartitionResult:
    """One partition's rows; or, when it cannot be read or a ledger stops it, the result saying why."""
    _tune_worker()
    t0 = time.perf_counter()
    p = job.partition
    try:
        with unwrap_cdp_error():
            got = _collect(job)
    except CdpError as exc:
        return PartitionResult(p, 0, time.perf_counter() - t0, error=str(exc))
    if got.error is not None:
        return PartitionResult(p, 0, time.perf_counter() - t0, bad_ledger=got.bad_ledger, error=got.error)
    got.started = t0
    return got


@without_cycle_collection()
def run_partition(job: PartitionJob) -> PartitionResult:
    """Extract one partition into its file (temp, fsync, rename); never raises for bad data."""
    from cdp.sinks._files import Files, file_meta, with_meta
    from cdp.sinks._parquet import ROW_TYPES, to_table

    got = collect_rows(job)
    if isinstance(got, PartitionResult):
        return got
    t0, p, rows = got.started, job.partition, got.rows()
    name = describe(job.processor)
    table = to_table(rows, job.config.schema, ROW_TYPES.get(name), getattr(job.processor, "columns", None))
    meta = file_meta(p.first, p.last, len(rows), job.fingerprint, job.settings, [d["ledger"] for d in got.dead])
    path = f"{job.directory.rstrip('/')}/{p.name}"
    try:
        files = Files.at(job.directory, job.config.datastore_timeout_s)
        files.write_table(p.name, with_meta(table, meta))
    except CdpError as exc:
        return PartitionResult(p, 0, time.perf_counter() - t0, error=str(exc), output_error=True)
    except OSError as exc:  # read-only, full, gone: one line for the client, not the worker's traceback
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # pyarrow's own text repeats the errno
        error = f"cannot write {path}: {reason} (errno {exc.errno})"
        return PartitionResult(p, 0, time.perf_counter() - t0, error=error, output_error=True)
    return PartitionResult(p, len(rows), time.perf_counter() - t0, got.skipped, got.dead)


def _collect(job: PartitionJob) -> _Collected:
    p = job.partition
    config = attrs.evolve(job.config, start_ledger=p.first, end_ledger=p.last)
    row_filter = RowFilter.from_config(config)
    name = describe(job.processor)
    got = _Collected()
    _read_partition(job, config, row_filter, name, got)
    return got


def _read_partition(job: PartitionJob, config: Config, row_filter: RowFilter, name: str, got: _Collected) -> None:
    from cdp.upstream._range import read_range

    p = job.partition
    for ledger in read_range(config, p.first, p.last):
        reason: str | None
        if ledger.problem is not None:
            reason = ledger.problem
        else:
            result = process_ledger(job.processor, row_filter, ledger)
            reason = result.error
        if reason is None:
            got.ledgers.append((ledger.sequence, result.rows))
            for why, count in result.skipped.items():
                got.skipped[why] = got.skipped.get(why, 0) + count
            continue
        if config.on_bad_ledger == "stop":
            got.bad_ledger, got.error = ledger.sequence, reason
            break
        got.dead.append(dead_letter_record(ledger, name, reason))
        got.ledgers.append((ledger.sequence, []))
