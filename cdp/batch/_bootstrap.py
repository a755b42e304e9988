"""``cdp bootstrap``: the contract-data state at a history-archive checkpoint, from its bucket lists.

The live bucket list is read newest first (level 0 ``curr``, then ``snap``, then level 1 ...): the
first record of a key met is its state (a ``DEADENTRY`` deletes it); then, for HAS version 2, the hot
archive the same way (its ``ARCHIVED`` entries are the archived persistent ones, a ``LIVE`` record
voids older archived copies), for keys the live list does not hold. Which key was met is kept in a
temporary SQLite file, not in memory (millions of keys on pubnet), with the entries themselves. Only
when every bucket and the bucket-list hash have checked out is anything written.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import attrs

from cdp._config import Config
from cdp._errors import ConfigError
from cdp._validators import AUTO, network_name
from cdp.extract import ContractDataRow, Row
from cdp.extract._changes import STATE, LedgerInfo
from cdp.extract._fast import entry_row_at
from cdp.extract._walk import FastPathError, ledger_key
from cdp.ops._progress import RateEstimate, bar, eta_text
from cdp.sinks import sink_type
from cdp.upstream._archive import Archive, ArchiveError, CheckpointState, header_key
from cdp.xdr._buckets import CONTRACT_DATA, Record, bucket_list_hash

LOG = logging.getLogger("cdp.bootstrap")
BATCH: Final = 10_000


@attrs.frozen
class BootstrapSummary:
    ledger: int
    output: str
    live: int  # contract-data entries live at the checkpoint
    archived: int  # in the hot archive
    records: int  # contract-data and TTL records read
    buckets: int
    seconds: float


def _network(config: Config, state: CheckpointState, archive: Archive) -> str:
    given = config.network_passphrase
    if state.network is None:
        if given == AUTO:
            raise ConfigError(f"--archive={archive.url}: its state names no network: give NETWORK_PASSPHRASE")
        return given
    if given not in (AUTO, state.network):
        raise ConfigError(f"--archive={archive.url}: the archive is {network_name(state.network)}'s, not "
                          f"NETWORK_PASSPHRASE={network_name(given)}")  # fmt: skip
    return state.network


def _verify_list(archive: Archive, state: CheckpointState, expected: bytes) -> None:
    found = bucket_list_hash(state.live)
    if state.hot:
        found = hashlib.sha256(found + bucket_list_hash(state.hot)).digest()
    if found != expected:
        raise ArchiveError(f"{archive.url}/{header_key(state.ledger)}: the buckets of checkpoint {state.ledger} hash "
                           f"to {found.hex()}, its header says {expected.hex()}")  # fmt: skip


class _Seen:
    """The first record met of each key, in a SQLite file: ``data``/``hot`` by the sha256 of the
    contract-data key, ``ttl`` by the key hash a TTL names."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages, whatever the state's size
        for table in ("data", "hot"):
            self.db.execute(f"CREATE TABLE {table} (key BLOB PRIMARY KEY, entry BLOB) WITHOUT ROWID")
        self.db.execute("CREATE TABLE ttl (key BLOB PRIMARY KEY, live_until INTEGER) WITHOUT ROWID")
        self.db.execute("BEGIN")

    def add(self, records: Iterator[Record], hot: bool) -> int:
        data: list[tuple[bytes, bytes | None]] = []
        ttls: list[tuple[bytes, int | None]] = []
        n = 0
        for r in records:
            n += 1
            if r.kind == "ttl":
                ttls.append((r.key, None if r.entry is None else int.from_bytes(r.entry[40:44], "big")))
            else:
                key = r.key or _data_key(r.entry or b"")
                data.append((hashlib.sha256(key).digest(), r.entry))
            if len(data) + len(ttls) >= BATCH:
                self._flush(data, ttls, hot)
        self._flush(data, ttls, hot)
        return n

    def _flush(self, data: list[tuple[bytes, bytes | None]], ttls: list[tuple[bytes, int | None]], hot: bool) -> None:
        self.db.executemany(f"INSERT OR IGNORE INTO {'hot' if hot else 'data'} VALUES (?, ?)", data)
        if not hot:  # a hot archive's entries have no TTL
            self.db.executemany("INSERT OR IGNORE INTO ttl VALUES (?, ?)", ttls)
        data.clear()
        ttls.clear()

    def live(self) -> Iterator[tuple[bytes, int | None]]:
        return iter(self.db.execute("SELECT d.entry, t.live_until FROM data d LEFT JOIN ttl t ON t.key = d.key "
                                    "WHERE d.entry IS NOT NULL ORDER BY d.key"))  # fmt: skip

    def archived(self) -> Iterator[tuple[bytes]]:
        return iter(self.db.execute("SELECT h.entry FROM hot h WHERE h.entry IS NOT NULL AND NOT EXISTS "
                                    "(SELECT 1 FROM data d WHERE d.key = h.key AND d.entry IS NOT NULL) "
                                    "ORDER BY h.key"))  # fmt: skip


def _decoded(entry: bytes) -> tuple[Any, bytes]:
    """A contract-data ``LedgerEntry`` the walk does not follow, decoded by the sdk: the entry, its key's bytes."""
    from stellar_sdk import xdr

    e = xdr.LedgerEntry.from_xdr_bytes(entry)
    cd = e.data.contract_data
    assert cd is not None, "a CONTRACT_DATA record holds contract data"
    key = xdr.LedgerKeyContractData(cd.contract, cd.key, cd.durability)
    return e, bytes(xdr.LedgerKey(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=key).to_xdr_bytes())


def _data_key(entry: bytes) -> bytes:
    """The ``LedgerKey`` bytes of a contract-data ``LedgerEntry``."""
    try:
        return ledger_key(entry, (0, len(entry)), CONTRACT_DATA)
    except FastPathError:
        return _decoded(entry)[1]


def state_row(entry: bytes, info: LedgerInfo, passphrase: str) -> ContractDataRow | None:
    """The row of a contract-data ``LedgerEntry`` as the state holds it at ``info``'s ledger."""
    try:
        return entry_row_at(entry, 0, STATE, info, passphrase)
    except FastPathError:
        from cdp.extract._full import entry_row
        from cdp.extract._rules import Encoded

        e, key = _decoded(entry)
        cd = e.data.contract_data
        encoded = Encoded(key, cd.key.to_xdr_bytes(), cd.val.to_xdr_bytes(), cd.to_xdr_bytes())
        last = e.last_modified_ledger_seq.uint32
        return entry_row(cd, last, STATE, info.sequence, info.close_time, passphrase, encoded)


def bootstrap(
    config: Config, archive_url: str, ledger: int | None = None, *, replace: bool = False,
    progress: IO[str] | None = None,
) -> BootstrapSummary:  # fmt: skip
    """Write the contract-data state at checkpoint ``ledger`` (default: the archive's latest) of the
    archive at ``archive_url`` to ``OUTPUT`` (PostgreSQL: the current table and the checkpoint, in one
    transaction; a directory: ``contract_data_state-LEDGER.parquet``; Iceberg: one snapshot of the
    table ``NAMESPACE.contract_data_state``).

    Raises:
        ConfigError: a setting the bootstrap cannot use (not a checkpoint ledger, another network, a
            target that is not empty without ``replace``).
        ArchiveError: a file that is missing or does not check out, naming it; nothing is written.
    """
    t0 = time.perf_counter()
    if sink_type(config).capabilities.bootstrap is None:
        raise ConfigError(
            f"OUTPUT={config.output}: a bootstrap writes to PostgreSQL, a Parquet directory or an Iceberg table"
        )
    archive = Archive(archive_url, config.datastore_timeout_s)
    state = archive.state(ledger)
    passphrase = _network(config, state, archive)
    header = archive.header(state.ledger)
    _verify_list(archive, state, header.bucket_list_hash)
    LOG.info("bootstrap started archive=%s ledger=%d network=%s buckets=%d output=%s", archive.url, state.ledger,
             network_name(passphrase), len(state.buckets), config.output)  # fmt: skip
    info = LedgerInfo(state.ledger, header.close_time, header.protocol, 0)
    with tempfile.TemporaryDirectory(prefix="cdp-bootstrap-") as tmp:
        seen = _Seen(Path(tmp) / "seen.sqlite")
        records = 0
        buckets = state.buckets
        bar = _Bar(progress, archive, buckets)
        try:
            for i, (name, hot) in enumerate(buckets, 1):
                if i < len(buckets):
                    archive.fetch_ahead(buckets[i][0])  # the next one downloads while this one is read
                records += seen.add(archive.bucket_records(name, hot), hot)
                LOG.info("bucket read bucket=%d/%d hot=%s records=%d", i, len(buckets), hot, records)
                bar.done(i, records)
        finally:
            archive.close()
            bar.close()
        counts = _write(config, state.ledger, _rows(seen, info, passphrase), replace)
        seen.db.close()
    summary = BootstrapSummary(state.ledger, config.output, counts[0], counts[1], records, len(state.buckets),
                               time.perf_counter() - t0)  # fmt: skip
    LOG.info("bootstrap done ledger=%d live=%d archived=%d records=%d seconds=%.1f", summary.ledger, summary.live,
             summary.archived, summary.records, summary.seconds)  # fmt: skip
    return summary


class _Bar:
    """Progress on a terminal: buckets read, records, compressed bytes and an ETA from their rate."""

    def __init__(self, stream: IO[str] | None, archive: Archive, buckets: list[tuple[str, bool]]) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.sizes = [archive.size(name) for name, _ in buckets] if self.stream else []
        self.total = sum(self.sizes)
        self.estimate = RateEstimate(self.total)
        self.estimate.update(time.monotonic(), 0)

    def done(self, buckets: int, records: int) -> None:
        if self.stream is None:
            return
        read = sum(self.sizes[:buckets])
        self.estimate.update(time.monotonic(), read)
        left = eta_text(self.estimate.eta_s)
        self.stream.write(f"\r{bar(read, self.total)} buckets {buckets}/{len(self.sizes)}  {records:,} records  "
                          f"{read >> 20}/{self.total >> 20} MiB  ETA {left}")  # fmt: skip
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")


def _rows(seen: _Seen, info: LedgerInfo, passphrase: str) -> Iterator[tuple[Row, bool]]:
    for entry, live_until in seen.live():
        row = state_row(entry, info, passphrase)
        if row is not None:
            row["live_until_ledger_seq"] = live_until
            yield row, False
    for (entry,) in seen.archived():
        row = state_row(entry, info, passphrase)
        if row is not None:
            yield row, True


def _write(config: Config, ledger: int, rows: Iterator[tuple[Row, bool]], replace: bool) -> tuple[int, int]:
    where = sink_type(config).capabilities.bootstrap
    if where == "table":
        from ._lake import write_state

        return write_state(config, ledger, rows, replace)
    if where == "tables":
        from cdp.sinks._pg_state import load_state
        from cdp.sinks._postgres import PostgresSink

        sink = PostgresSink.for_config(config)
        try:
            return load_state(sink, ledger, rows, replace)
        finally:
            sink.close()
    return _write_parquet(Path(config.output), ledger, rows, replace)


def _write_parquet(directory: Path, ledger: int, rows: Iterator[tuple[Row, bool]], replace: bool) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cdp.sinks._parquet import require_pyarrow, to_table

    require_pyarrow()
    target = directory / f"contract_data_state-{ledger:010d}.parquet"
    if target.exists() and not replace:
        raise ConfigError(f"OUTPUT={directory}: {target.name} exists: give --replace to write it again")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{target.name}.{os.getpid()}.tmp"
    counts = [0, 0]
    writer: Any = None
    try:
        batch: list[tuple[Row, bool]] = []
        for item in itertools.chain(rows, [None]):  # streamed: the state may be millions of rows
            if item is not None:
                batch.append(item)
                counts[item[1]] += 1
            if batch and (item is None or len(batch) >= BATCH):
                table = to_table([r for r, _ in batch], "full", ContractDataRow)
                table = table.append_column("archived", pa.array([a for _, a in batch], pa.bool_()))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                batch = []
        if writer is None:
            raise ConfigError(f"the state at ledger {ledger} has no contract data: nothing to write")
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return counts[0], counts[1]
