"""``cdp backfill`` into an Iceberg table, on a cluster with no shared disk.

Each Dask task extracts one partition (aligned with the table's ``truncate(ledger_sequence, W)``
partitions) and writes its Parquet data file straight into the table's location (a local warehouse
or object storage) through the table's own FileIO, with only the settings the client hands it: the
workers need no catalog. The client adds the finished files to the table in ledger order, in groups
(one snapshot per group, its summary naming the partitions and the last ledger), so every snapshot
ends on a partition boundary and ``cdp run`` can continue the table live. A task killed before it
returned costs a retry: its file, if any, is never committed, and is removed at the next start.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import IO, TYPE_CHECKING, Any

import attrs

from cdp._config import Config
from cdp.processors._base import LedgerProcessor, describe

from ._plan import Partition, plan
from ._task import PartitionJob, PartitionResult, without_cycle_collection

if TYPE_CHECKING:
    from cdp.sinks._iceberg import IcebergSink

    from ._run import BackfillSummary, Cluster

LOG = logging.getLogger("cdp.backfill")


@attrs.frozen
class LakeJob:
    """A partition to write as one data file under ``job.directory`` (the table's data), in the table's Arrow schema."""

    job: PartitionJob
    arrow_schema: Any
    io_properties: dict[str, str]
    width: int  # the table's truncate width: the partition value is first - first % width

    @property
    def partition(self) -> Partition:
        return self.job.partition


def backfill_iceberg(
    config: Config,
    cluster: Cluster,
    processor: LedgerProcessor,
    progress: IO[str] | None,
    network: str,
) -> BackfillSummary:
    """``START_LEDGER..END_LEDGER`` into the table after the ledger its last snapshot holds."""
    from cdp.sinks._iceberg import IcebergSink

    config = attrs.evolve(config, network_passphrase=network)
    sink = IcebergSink(config, describe(processor), getattr(processor, "columns", None))
    try:
        return _fill(config, sink, processor, cluster, progress)
    finally:
        sink.close()


def _fill(
    config: Config,
    sink: IcebergSink,
    processor: LedgerProcessor,
    cluster: Cluster,
    progress: IO[str] | None,
) -> BackfillSummary:
    from cdp.sinks._lake import failing, partition_width, summary

    from ._run import BackfillSummary, dead_letter, fail_on, in_order, start_after

    name = describe(processor)
    last = sink.open()
    table = sink.table
    start = start_after(config, last)
    t0 = time.perf_counter()
    width = partition_width(table) or config.parquet_ledgers_per_file
    parts = plan(start, config.end_ledger, width, name)
    if not parts:
        LOG.info("backfill: the table already holds ledgers up to %s table=%s", last, sink.checkpoint_name)
        return BackfillSummary(sink.checkpoint_name, 0, 0, 0, 0, 0, 0, time.perf_counter() - t0)
    import pyarrow as pa

    # Without Iceberg field ids: add_files maps a file's columns to the table's by name.
    plain = pa.schema([pa.field(f.name, f.type, f.nullable) for f in table.schema().as_arrow()])
    data_dir = f"{table.location().rstrip('/')}/data"
    jobs = [
        LakeJob(PartitionJob(p, config, processor, data_dir, sink.rows.digest, sink.rows.settings), plain,
                dict(table.io.properties), width)
        for p in parts
    ]  # fmt: skip
    ledgers = rows = dead = 0
    group: list[PartitionResult] = []
    since = time.monotonic()

    def commit() -> None:
        nonlocal since
        if not group:
            return
        files = [r.file for r in group if r.file is not None]
        spans = ",".join(f"{r.partition.first}-{r.partition.last}" for r in group)
        props = summary(group[-1].partition.last, sink.rows.digest, sink.rows.settings, **{"cdp.partitions": spans})
        with failing(f"OUTPUT={config.output}"):
            table.add_files(files, snapshot_properties=props, check_duplicate_files=False)
        LOG.info("iceberg snapshot committed table=%s partitions=%s files=%d", sink.checkpoint_name, spans, len(files))
        group.clear()
        since = time.monotonic()

    with cluster.connect(config.scheduler_timeout_s) as (dask, where):
        LOG.info("backfill started dashboard=%s %s ledgers=%d..%d partitions=%d table=%s", dask.dashboard_link,
                 where, start, config.end_ledger, len(parts), sink.checkpoint_name)  # fmt: skip
        for result in in_order(dask, jobs, write_data_file):
            dead_letter(config, result)
            if result.error is not None:
                commit()  # what precedes the failed partition is committed; it is not
                fail_on(result, name)
            group.append(result)
            ledgers += result.partition.ledgers
            rows += result.rows
            dead += len(result.dead_letters)
            LOG.info("partition written ledgers=%d..%d rows=%d seconds=%.1f", result.partition.first,
                     result.partition.last, result.rows, result.seconds)  # fmt: skip
            grouped = sum(r.partition.ledgers for r in group)
            if grouped >= config.iceberg_commit_ledgers or time.monotonic() - since >= config.iceberg_commit_interval_s:
                commit()
            if progress is not None and progress.isatty():
                progress.write(f"\rledgers {result.partition.last - start + 1}/{config.end_ledger - start + 1}")
        commit()
    seconds = time.perf_counter() - t0
    LOG.info("backfill done partitions=%d ledgers=%d rows=%d seconds=%.1f table=%s", len(parts), ledgers, rows,
             seconds, sink.checkpoint_name)  # fmt: skip
    return BackfillSummary(sink.checkpoint_name, len(parts), len(parts), 0, ledgers, rows, dead, seconds)


@without_cycle_collection()
def write_data_file(lake: LakeJob) -> PartitionResult:
    """Extract one partition and write it as one data file of the table (on a worker); never raises for bad data."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    from cdp.sinks._parquet import ROW_TYPES, to_table

    from ._task import collect_rows

    job, p = lake.job, lake.job.partition
    got = collect_rows(job)
    if isinstance(got, PartitionResult):
        return got
    seconds, rows = time.perf_counter() - got.started, got.rows()
    if not rows:
        return PartitionResult(p, 0, seconds, got.skipped, got.dead)
    import pyarrow.parquet as pq

    name = describe(job.processor)
    table = to_table(rows, job.config.schema, ROW_TYPES.get(name), getattr(job.processor, "columns", None))
    table = table.cast(lake.arrow_schema)
    bucket = p.first - p.first % lake.width
    path = f"{job.directory}/ledger_sequence_trunc={bucket}/cdp-{p.first:010d}-{p.last:010d}-{uuid.uuid4().hex}.parquet"
    try:
        with PyArrowFileIO(lake.io_properties).new_output(path).create(overwrite=False) as out:
            pq.write_table(table, out, write_page_checksum=True)
    except OSError as exc:
        error = f"cannot write {path}: {' '.join(str(exc).split())}"
        return PartitionResult(p, 0, time.perf_counter() - got.started, error=error, output_error=True)
    return PartitionResult(p, len(rows), time.perf_counter() - got.started, got.skipped, got.dead, file=path)
