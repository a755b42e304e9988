"""``cdp backfill`` into PostgreSQL: partitions extracted in parallel on Dask, written in ledger order.

The current-state table is a function of the ledgers in order, so the workers only read and
extract (the costly part) and the client writes each partition, in order, through the same
``PostgresSink`` transaction as ``cdp run`` (rows, state and checkpoint together). A rerun, or a
``cdp run`` afterwards, resumes after the database's checkpoint: the two write the same tables.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

from cdp._config import Config
from cdp._errors import CdpError, ConfigError
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._registry import load_processor
from cdp.processors._state import ContractStateProcessor

from ._plan import fingerprint, plan
from ._task import PartitionJob, PartitionLedgers, collect_partition

LOG = logging.getLogger("cdp.backfill")


def backfill_postgres(
    config: Config,
    client: Any,
    scheduler: str | None,
    workers: int | None,
    processor: LedgerProcessor | None,
    progress: IO[str] | None,
) -> tuple[int, int, int, int, float]:
    """``START_LEDGER..END_LEDGER`` into the database; (partitions, written, ledgers, rows, seconds)."""
    from cdp.sinks._postgres import PostgresSink

    from ._run import client_for, dead_letter, fail_on

    processor = processor or load_processor(config.processor, config)
    state = ContractStateProcessor.wrapping(processor)
    sink = PostgresSink.for_config(config)
    t0 = time.perf_counter()
    try:
        last = sink.open()
        start = start_after(config, last)
        parts = plan(start, config.end_ledger, config.parquet_ledgers_per_file, describe(processor))
        if not parts:
            LOG.info("backfill: the database already holds ledgers up to %s", last)
            return 0, 0, 0, 0, time.perf_counter() - t0
        digest, settings = fingerprint(config)
        jobs = [PartitionJob(p, config, state, "", digest, settings) for p in parts]
        ledgers = rows = 0
        with client_for(client, scheduler, workers, config.scheduler_timeout_s) as (dask, where):
            LOG.info("backfill started dashboard=%s %s ledgers=%d..%d partitions=%d tables=%s", dask.dashboard_link,
                     where, start, config.end_ledger, len(parts), sink.checkpoint_name)  # fmt: skip
            for result in in_order(dask, jobs):
                if result.ledgers:
                    sink.write_many_blocking(result.ledgers)
                dead_letter(config, result)
                fail_on(result, describe(processor))
                ledgers += result.partition.ledgers
                rows += result.rows
                LOG.info("partition written ledgers=%d..%d rows=%d", result.partition.first, result.partition.last,
                         result.rows)  # fmt: skip
                if progress is not None and progress.isatty():
                    progress.write(f"\rledgers {result.partition.last - start + 1}/{config.end_ledger - start + 1}")
        return len(parts), len(parts), ledgers, rows, time.perf_counter() - t0
    finally:
        sink.close()


def start_after(config: Config, last: int | None) -> int:
    """After the database's checkpoint; a range that would leave a gap after it is refused."""
    if last is None:
        return config.start_ledger
    if last + 1 < config.start_ledger:
        raise ConfigError(
            f"START_LEDGER={config.start_ledger}: the tables end at ledger {last}; starting later would leave "
            f"{last + 1}..{config.start_ledger - 1} out: start at {last + 1} or use other tables"
        )
    if last >= config.start_ledger:
        LOG.info("resuming from the output's checkpoint ledger=%d", last)
    return last + 1


def in_order(dask: Any, jobs: Sequence[Any], task: Callable[[Any], Any] = collect_partition) -> Any:
    """Each partition's ``task(job)`` result in ledger order, at most a window of them run ahead."""
    from distributed import KilledWorker, as_completed

    window = max(2, 2 * sum(dask.nthreads().values()))
    index: dict[str, int] = {}
    done: dict[int, PartitionLedgers] = {}
    futures = as_completed()
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        job = jobs[submitted]
        key = f"cdp-{job.partition.first}-{job.partition.last}-{uuid.uuid4().hex[:8]}"
        futures.add(dask.submit(task, job, key=key))
        index[key] = submitted
        submitted += 1

    while submitted < min(window, len(jobs)):
        submit()
    wanted = 0
    try:
        for future in futures:
            try:
                done[index[future.key]] = future.result()
            except KilledWorker as exc:
                p = jobs[index[future.key]].partition
                raise CdpError(
                    f"partition {p.first}..{p.last}: its worker died each time it was tried: {exc}"
                ) from None
            while wanted in done:
                yield done.pop(wanted)
                wanted += 1
                if submitted < len(jobs):
                    submit()
    finally:
        for future in list(futures.futures):
            future.cancel()
