"""``cdp backfill`` into PostgreSQL: partitions extracted in parallel on Dask, written in ledger order.

The current-state table is a function of the ledgers in order, so the workers only read and
extract (the costly part) and the client writes each partition, in order, through the same
``PostgresSink`` transaction as ``cdp run`` (rows, state and checkpoint together). A rerun, or a
``cdp run`` afterwards, resumes after the database's checkpoint: the two write the same tables.
"""

from __future__ import annotations

import logging
import time
from typing import IO, TYPE_CHECKING

from cdp._config import Config
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._state import ContractStateProcessor

from ._plan import fingerprint, plan
from ._task import PartitionJob

if TYPE_CHECKING:
    from ._run import Cluster

LOG = logging.getLogger("cdp.backfill")


def backfill_postgres(
    config: Config, cluster: Cluster, processor: LedgerProcessor, progress: IO[str] | None
) -> tuple[int, int, int, int, float]:
    """``START_LEDGER..END_LEDGER`` into the database; (partitions, written, ledgers, rows, seconds)."""
    from cdp.sinks._postgres import PostgresSink

    from ._run import dead_letter, fail_on, in_order, start_after

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
        with cluster.connect(config.scheduler_timeout_s) as (dask, where):
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
