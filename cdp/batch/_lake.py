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
from typing import Any

import attrs

from cdp._config import Config
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
    from cdp._errors import ConfigError
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
