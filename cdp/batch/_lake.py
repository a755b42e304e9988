"""``cdp lake compact``: an Iceberg table's small files rewritten into one per partition, atomically.

Live runs commit often, so a partition gathers many small files; compaction replaces a partition's
files by one holding the same rows in the same order, in one commit (readers see the old files or
the new one, never both or neither), and keeps the checkpoint in the new snapshot's summary. On
request it also expires snapshots older than a moment; then the files only they used are removed,
with any file a killed writer left behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any, Final

import attrs

from cdp._config import Config
from cdp._errors import ConfigError
from cdp.extract import Row
from cdp.processors._base import describe
from cdp.processors._registry import load_processor

LOG = logging.getLogger("cdp.lake")


@attrs.frozen
class CompactSummary:
    table: str
    partitions: int  # rewritten
    files_before: int
    files_after: int
    snapshots_expired: int
    files_removed: int  # no longer used by any snapshot (expired, or a killed writer's)


def compact(config: Config, *, min_files: int = 2, expire_older_than: dt.timedelta | None = None) -> CompactSummary:
    """Rewrite every partition with at least ``min_files`` data files into one; then expire snapshots
    older than ``expire_older_than`` (the current one always stays).

    Raises:
        ConfigError: OUTPUT is not an iceberg:// table, or one cdp did not write.
        CdpError: the catalog or warehouse cannot be reached, or another writer committed meanwhile.
    """
    from cdp.sinks._iceberg import IcebergSink

    if config.format != "iceberg":
        raise ConfigError(f"OUTPUT={config.output}: cdp lake works on iceberg://NAMESPACE[.TABLE] tables")
    processor = load_processor(config.processor, config)
    sink = IcebergSink(config, describe(processor), getattr(processor, "columns", None))
    try:
        return _compact(config, sink, min_files, expire_older_than)
    finally:
        sink.close()


def _compact(config: Config, sink: Any, min_files: int, expire_older_than: dt.timedelta | None) -> CompactSummary:
    from cdp.sinks._lake import committed, failing, partition_width, remove_orphans, summary

    sink.open(create=False)  # checks the table is cdp's and of these settings; removes a killed writer's files
    table = sink.table
    where = f"OUTPUT={config.output}"
    width = partition_width(table)
    with failing(where):
        files: dict[int, list[str]] = {}
        for task in table.scan().plan_files():
            key = task.file.partition[0] if width is not None else 0
            files.setdefault(key, []).append(task.file.file_path)
        before = sum(len(v) for v in files.values())
        rewritten = 0
        for low in sorted(k for k, v in files.items() if len(v) >= min_files):
            held = committed(table, sink.target)
            assert held.last is not None
            _rewrite(
                table,
                low,
                width,
                summary(held.last, sink.rows.digest, sink.rows.settings, **{"cdp.compacted": str(low)}),
            )
            rewritten += 1
            LOG.info(
                "partition compacted table=%s from_ledger=%d files=%d->1", sink.checkpoint_name, low, len(files[low])
            )
        expired = 0
        if expire_older_than is not None:
            expire_before = dt.datetime.now(dt.UTC) - expire_older_than  # after the rewrite: its snapshots count
            table.refresh()
            current = table.current_snapshot()
            old = [
                s.snapshot_id
                for s in table.snapshots()
                if s.timestamp_ms < expire_before.timestamp() * 1000 and s.snapshot_id != current.snapshot_id
            ]
            if old:
                table.maintenance.expire_snapshots().by_ids(old).commit()
                expired = len(old)
        removed = remove_orphans(table)
        table.refresh()
        after = sum(1 for _ in table.scan().plan_files())
    LOG.info("compacted table=%s partitions=%d files=%d->%d snapshots_expired=%d files_removed=%d",
             sink.checkpoint_name, rewritten, before, after, expired, len(removed))  # fmt: skip
    return CompactSummary(sink.checkpoint_name, rewritten, before, after, expired, len(removed))


def _rewrite(table: Any, low: int, width: int | None, props: dict[str, str]) -> None:
    """One partition's rows, read and written back as one file in one overwrite commit; a stable sort by
    ledger keeps each ledger's rows in their order (a ledger is never split across files)."""
    import pyarrow.compute as pc

    where = "true" if width is None else f"ledger_sequence >= {low} and ledger_sequence < {low + width}"
    data = table.scan(row_filter=where).to_arrow()
    if "ledger_sequence" in data.column_names:
        data = data.take(pc.sort_indices(data, [("ledger_sequence", "ascending")]))
    table.overwrite(data, overwrite_filter=where, snapshot_properties=props)


STATE_LEDGER: Final = "cdp.state-ledger"
FILE_ROWS: Final = 1_000_000  # rows per data file of a bootstrapped state


def write_state(config: Config, ledger: int, rows: Iterator[tuple[Row, bool]], replace: bool) -> tuple[int, int]:
    """``cdp bootstrap`` into Iceberg: the state at ``ledger`` becomes the rows of ``NAMESPACE.contract_data_state``
    (or the TABLE named) in one commit, its snapshot saying the ledger (``cdp.state-ledger``); an earlier
    state stays readable by time travel until its snapshot is expired. Rows are streamed into data files
    of ``FILE_ROWS`` rows, never all held. Returns (live, archived) row counts.

    Raises:
        ConfigError: the table already holds the state at ``ledger`` (without ``replace``), or is not a state
            table; the state has no contract data.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import PyArrowFileIO

    from cdp.extract import ContractDataRow
    from cdp.extract._rows import row_fields
    from cdp.sinks._lake import Target, close_catalog, failing, open_catalog, open_table, require_pyiceberg
    from cdp.sinks._parquet import require_pyarrow, to_table

    require_pyiceberg()
    require_pyarrow()
    target = Target.parse(config.output, "contract_data_state")
    where = f"OUTPUT={config.output}"
    columns = row_fields("compact", True)
    schema = to_table([], "full", ContractDataRow, columns).schema.append(pa.field("archived", pa.bool_()))
    catalog = open_catalog(config)
    try:
        table = open_table(catalog, target, schema, config.parquet_ledgers_per_file)
        with failing(where):
            current = table.current_snapshot()
            held = None if current is None else current.summary.additional_properties.get(STATE_LEDGER)
            if current is not None and held is None:
                raise ConfigError(f"{where}: {target.identifier} is not a table of bootstrapped states")
            if held == str(ledger) and not replace:
                raise ConfigError(f"{where}: {target.identifier} holds the state at ledger {ledger}: give --replace "
                                  "to write it again")  # fmt: skip
            plain = pa.schema([pa.field(f.name, f.type, f.nullable) for f in table.schema().as_arrow()])
            io = PyArrowFileIO(dict(table.io.properties))
            files: list[str] = []
            counts = [0, 0]
            writer: Any = None
            out: Any = None
            written = 0
            for chunk in _batches(rows, 10_000):
                data = to_table([r for r, _ in chunk], "full", ContractDataRow, columns)
                data = data.append_column("archived", pa.array([a for _, a in chunk], pa.bool_())).cast(plain)
                for _, archived in chunk:
                    counts[archived] += 1
                if writer is None:
                    path = f"{table.location().rstrip('/')}/data/state-{ledger:010d}-{uuid.uuid4().hex}.parquet"
                    out = io.new_output(path).create(overwrite=False)
                    writer, written = pq.ParquetWriter(out, plain), 0
                    files.append(path)
                writer.write_table(data)
                written += data.num_rows
                if written >= FILE_ROWS:
                    writer.close()
                    out.close()
                    writer = None
            if writer is not None:
                writer.close()
                out.close()
            if not files:
                raise ConfigError(f"the state at ledger {ledger} has no contract data: nothing to write")
            props = {STATE_LEDGER: str(ledger)}
            with table.transaction() as tx:  # the old state's files out, the new ones in: one commit
                if current is not None:
                    tx.delete("true", snapshot_properties=props)
                tx.add_files(files, snapshot_properties=props, check_duplicate_files=False)
        LOG.info("state committed table=%s ledger=%d files=%d", target.identifier, ledger, len(files))
        return counts[0], counts[1]
    finally:
        close_catalog(catalog)


def _batches(rows: Iterator[tuple[Row, bool]], size: int) -> Iterator[list[tuple[Row, bool]]]:
    batch: list[tuple[Row, bool]] = []
    for item in rows:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
