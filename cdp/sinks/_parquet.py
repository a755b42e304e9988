"""Parquet output (``--format parquet``, pyarrow from the ``parquet`` extra), rolled by ledger count.

A file holds the ledgers of one aligned block (``first // N == last // N`` for N ledgers per file)
and is written at once (temp file, fsync, rename) when the block is complete or the run ends;
only then does the checkpoint move. On start, files that begin at or after the resume ledger
are removed: they were written after the last checkpoint, and will be written again, so a crash
at any instant still yields each ledger's rows exactly once.

Schemas: ``full`` is every row field (``key_decoded``/``val_decoded`` as JSON text, ``closed_at``
a UTC timestamp); ``ttp`` is the original service's 18-column Arrow schema, same names and
order, with ``balance`` as exact decimal text (never null on overflow) and
``expiration_ledger_seq`` carrying ``live_until_ledger_seq``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from cdp._errors import ConfigError
from cdp.extract._rows import Row

from ._base import Durable

LOG = logging.getLogger("cdp.sink")

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - exercised only without the extra
    pa = None
    pq = None

_FILE: Final = re.compile(r"^(?P<name>.+)-(?P<first>\d{10})-(?P<last>\d{10})\.parquet$")

TTP_COLUMNS: Final = (
    "contract_id", "contract_key_type", "contract_durability", "asset_code", "asset_issuer", "asset_type",
    "balance_holder", "balance", "last_modified_ledger", "deleted", "ledger_sequence", "closed_at",
    "ledger_key_hash", "key_xdr", "val_xdr", "contract_instance_type", "contract_instance_wasm_hash",
    "expiration_ledger_seq",
)  # fmt: skip


def require_pyarrow() -> None:
    if pa is None:
        raise ConfigError("FORMAT=parquet: needs pyarrow: pip install 'contract-data-processor[parquet]'")


def _ttp_schema() -> Any:
    s, u32 = pa.string(), pa.uint32()
    types = [s, s, s, s, s, s, s, s, u32, pa.bool_(), u32, pa.timestamp("us", tz="UTC"), s, s, s, s, s, u32]
    required = {"contract_id", "contract_key_type", "contract_durability", "last_modified_ledger", "deleted",
                "ledger_sequence", "closed_at"}  # fmt: skip
    return pa.schema([pa.field(n, t, nullable=n not in required) for n, t in zip(TTP_COLUMNS, types, strict=True)])


_FULL_TYPES: Final = {
    "last_modified_ledger": "uint32",
    "ledger_entry_change": "uint32",
    "ledger_sequence": "uint32",
    "live_until_ledger_seq": "uint32",
    "tx_index": "uint32",
    "operation_index": "uint32",
    "deleted": "bool",
    "closed_at": "timestamp",
}


def _closed_at(text: Any) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def to_table(rows: Sequence[Row], schema_name: str) -> Any:
    """Rows as an Arrow table in the chosen schema."""
    if schema_name == "ttp":
        schema = _ttp_schema()
        columns: dict[str, list[Any]] = {n: [] for n in TTP_COLUMNS}
        for r in rows:
            for name in TTP_COLUMNS:
                source = {"key_xdr": "key", "val_xdr": "val", "expiration_ledger_seq": "live_until_ledger_seq"}.get(
                    name, name
                )
                value = r.get(source)
                if name == "closed_at":
                    value = _closed_at(value)
                elif value == "":
                    value = None  # the original writes empty strings as nulls
                columns[name].append(value)
        return pa.table(columns, schema=schema)
    if not rows:
        return pa.table({})
    names = list(rows[0])
    fields = []
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        kind = _FULL_TYPES.get(name)
        if kind == "timestamp":
            fields.append(pa.field(name, pa.timestamp("ms", tz="UTC")))
            values = [_closed_at(v) for v in values]
        elif kind == "uint32":
            fields.append(pa.field(name, pa.uint32()))
        elif kind == "bool":
            fields.append(pa.field(name, pa.bool_()))
        elif any(isinstance(v, dict | list) for v in values):
            fields.append(pa.field(name, pa.string()))
            values = [None if v is None else json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values]
        else:
            fields.append(pa.field(name, pa.array(values).type if any(v is not None for v in values) else pa.string()))
        columns[name] = values
    return pa.table(columns, schema=pa.schema(fields))


class ParquetSink:
    """Rolls files of ``ledgers_per_file`` aligned ledgers into ``directory``."""

    name = "parquet"

    def __init__(self, directory: Path, prefix: str, schema: str, ledgers_per_file: int, resume_ledger: int) -> None:
        require_pyarrow()
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.per_file = ledgers_per_file
        self._rows: list[Row] = []
        self._first: int | None = None
        self._last: int | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.iterdir():
            m = _FILE.match(path.name)
            if m and m["name"] == prefix and int(m["first"]) >= resume_ledger:
                LOG.warning("removing parquet file written after the checkpoint path=%s", path)
                path.unlink()

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        durable = None
        if self._last is not None and sequence // self.per_file != self._last // self.per_file:
            durable = await self.flush()
        if self._first is None:
            self._first = sequence
        self._last = sequence
        self._rows.extend(rows)
        await trio.lowlevel.checkpoint()
        return durable

    async def flush(self) -> Durable | None:
        if self._first is None or self._last is None:
            await trio.lowlevel.checkpoint()
            return None
        first, last, rows = self._first, self._last, self._rows
        self._first = self._last = None
        self._rows = []
        path = self.directory / f"{self.prefix}-{first:010d}-{last:010d}.parquet"
        await trio.to_thread.run_sync(self._write_file, path, rows)
        LOG.info("parquet file written path=%s ledgers=%d..%d rows=%d", path, first, last, len(rows))
        return Durable(last)

    def _write_file(self, path: Path, rows: list[Row]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(to_table(rows, self.schema), tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def close(self) -> None:
        pass
