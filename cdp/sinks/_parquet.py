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
import functools
import json
import logging
import operator
import os
import re
import typing
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from cdp._errors import missing_extra
from cdp._json import json_text as _json_text
from cdp.extract._rows import (
    JSON_TEXT,
    UTC_TIMESTAMP,
    ContractDataRow,
    EvictedKeyRow,
    RestoredKeyRow,
    Row,
    TtlRow,
    field_types,
)

from ._base import Capabilities, Durable
from ._replay import Retained

LOG = logging.getLogger("cdp.sink")

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - exercised only without the extra
    pa = None
    pq = None

_FILE: Final = re.compile(r"^(?P<name>.+)-(?P<first>\d{10})-(?P<last>\d{10})\.parquet$")

# The original service's 18 columns, in its order: (its name, the row field it carries).
TTP_COLUMNS: Final = (
    ("contract_id", "contract_id"), ("contract_key_type", "contract_key_type"),
    ("contract_durability", "contract_durability"), ("asset_code", "asset_code"), ("asset_issuer", "asset_issuer"),
    ("asset_type", "asset_type"), ("balance_holder", "balance_holder"), ("balance", "balance"),
    ("last_modified_ledger", "last_modified_ledger"), ("deleted", "deleted"), ("ledger_sequence", "ledger_sequence"),
    ("closed_at", "closed_at"), ("ledger_key_hash", "ledger_key_hash"), ("key_xdr", "key"), ("val_xdr", "val"),
    ("contract_instance_type", "contract_instance_type"),
    ("contract_instance_wasm_hash", "contract_instance_wasm_hash"), ("expiration_ledger_seq", "live_until_ledger_seq"),
)  # fmt: skip
_TTP_REQUIRED: Final = frozenset(
    ("contract_id", "contract_key_type", "contract_durability", "last_modified_ledger", "deleted", "ledger_sequence",
     "closed_at")
)  # fmt: skip
# The row shapes of the built-in processors; other processors' columns are inferred from their rows.
ROW_TYPES: Final[dict[str, type]] = {
    "contract_data": ContractDataRow, "ttl": TtlRow, "evicted_keys": EvictedKeyRow, "restored_keys": RestoredKeyRow
}  # fmt: skip


def require_pyarrow() -> None:
    if pa is None:
        raise missing_extra("FORMAT=parquet", "parquet", "pyarrow")


def _marker(hint: Any) -> str | None:
    """The ``Annotated`` marker of a row field (``UTC_TIMESTAMP``, ``JSON_TEXT``), if any."""
    if typing.get_origin(hint) in (typing.NotRequired, typing.Required):
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is typing.Annotated:
        return str(hint.__metadata__[0])
    return None


def arrow_type(hint: Any, time_unit: str = "ms") -> Any:
    """The Arrow type of a row field from its ``TypedDict`` annotation (``Optional`` is nullable anyway)."""
    if typing.get_origin(hint) in (typing.NotRequired, typing.Required):
        hint = typing.get_args(hint)[0]
    marker = _marker(hint)
    if marker == UTC_TIMESTAMP:
        return pa.timestamp(time_unit, tz="UTC")
    if marker == JSON_TEXT:
        return pa.string()
    if marker is not None:
        hint = hint.__origin__
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        hint = args[0]
    return {int: pa.uint32(), bool: pa.bool_(), str: pa.string()}.get(hint, pa.string())


_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@functools.lru_cache(maxsize=256)
def _closed_at(text: Any, unit: str) -> int:
    """Parsed once per ledger, not per row (a state's rows all share one), to the count of ``unit``s
    since the epoch: Arrow takes integers ~10x faster than ``datetime`` objects."""
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * _PER_SECOND[unit]


def _column(values: Sequence[Any], kind: Any, json_text: bool = False) -> Any:
    """Row values as an Arrow array: timestamps parsed; nested JSON (and, in a ``JSON_TEXT`` field,
    every value: a bare string is JSON too) as its compact text."""
    if pa.types.is_timestamp(kind):
        counts = [None if v is None else _closed_at(v, kind.unit) for v in values]
        return pa.array(counts, pa.int64()).cast(kind)
    if json_text:
        return pa.array([None if v is None else _json_text(v) for v in values], kind)
    try:
        return pa.array(values, kind)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        if not (pa.types.is_string(kind) and any(isinstance(v, dict | list) for v in values)):
            raise
    return pa.array([None if v is None else _json_text(v) for v in values], kind)


def _columns(rows: Sequence[Row], names: list[str]) -> list[Sequence[Any]]:
    """Each name's values, row by row (None where a row lacks it): one pass over the rows when every
    row has every name, as the built-in processors' rows do."""
    if len(names) > 1:
        try:
            return list(zip(*map(operator.itemgetter(*names), rows), strict=True)) or [() for _ in names]
        except KeyError:
            pass
    return [[r.get(name) for r in rows] for name in names]


def ttp_table(rows: Sequence[Row]) -> Any:
    """The original service's layout; its empty strings are nulls and ``balance`` stays exact text."""
    hints = field_types(ContractDataRow)
    fields, columns = [], {}
    for name, source in TTP_COLUMNS:
        kind = arrow_type(hints[source], "us")
        fields.append(pa.field(name, kind, nullable=name not in _TTP_REQUIRED))
        values = [None if r.get(source) == "" else r.get(source) for r in rows]
        columns[name] = _column(values, kind)
    return pa.table(columns, schema=pa.schema(fields))


def to_table(
    rows: Sequence[Row], schema_name: str, row_type: type | None = None, columns: Sequence[str] | None = None
) -> Any:
    """Rows as an Arrow table: ``ttp``, or ``full`` typed from ``row_type``.

    ``columns`` (the processor's, when it declares them) fixes the columns whatever the rows hold, so
    every file, and a file of no rows, has the same schema and a directory reads as one dataset;
    without them, the first row's fields are the columns.
    """
    if schema_name == "ttp":
        return ttp_table(rows)
    have = columns or (rows[0] if rows else ())
    if not have:
        return pa.table({})
    hints = field_types(row_type) if row_type is not None else {}
    names = [n for n in hints if n in have] + [n for n in have if n not in hints]
    fields, data = [], {}
    for name, values in zip(names, _columns(rows, names), strict=True):
        if name in hints:
            kind = arrow_type(hints[name])
        elif not values or any(isinstance(v, dict | list) for v in values):
            kind = pa.string()
        else:
            kind = pa.array(values).type if any(v is not None for v in values) else pa.string()
        fields.append(pa.field(name, kind))
        data[name] = _column(values, kind, name in hints and _marker(hints[name]) == JSON_TEXT)
    return pa.table(data, schema=pa.schema(fields))


def rows_from_table(table: Any, schema_name: str, row_type: type | None = None) -> list[dict[str, Any]]:
    """``to_table``'s inverse: rows as the processor emitted them (``ttp``: the fields it keeps, its
    columns renamed back), so a table written by this module can be served again as rows."""
    hints = field_types(row_type) if row_type is not None else {}
    rename = {name: source for name, source in TTP_COLUMNS} if schema_name == "ttp" else {}
    decoders: dict[str, Any] = {}
    for name in table.column_names:
        field = rename.get(name, name)
        kind = table.schema.field(name).type
        if pa.types.is_timestamp(kind):
            decoders[name] = lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif field in hints and _marker(hints[field]) == JSON_TEXT:
            decoders[name] = json.loads
    out = []
    for record in table.to_pylist():
        row = {}
        for name, value in record.items():
            if value is not None and name in decoders:
                value = decoders[name](value)
            row[rename.get(name, name)] = value
        out.append(row)
    return out


def rows_from_arrow(table: Any, schema: str = "full", processor: str = "contract_data") -> list[dict[str, Any]]:
    """The rows of an Arrow table or record batch that cdp wrote (Parquet) or served (Arrow Flight), as
    ``cdp run`` writes them to JSONL: JSON columns decoded, timestamps in stellar-etl's form. ``schema``
    is the table's ``SCHEMA`` (``full`` or ``ttp``), ``processor`` the one that made the rows."""
    require_pyarrow()
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return rows_from_table(table, schema, ROW_TYPES.get(processor))


def file_name(prefix: str, first: int, last: int) -> str:
    """``contract_data-0000001000-0000001999.parquet``: the processor, then the ledgers the file holds."""
    return f"{prefix}-{first:010d}-{last:010d}.parquet"


def write_table_atomically(path: Path, table: Any) -> None:
    """Write to a hidden temporary name unique to this writer, fsync, rename: a reader sees the whole
    file or none, and two writers of one file (a retried task and a straggler) never mix their bytes."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, write_page_checksum=True)  # a page damaged later is found, not read as rows
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Rolling:
    """Rows held per aligned block of ``per_file`` ledgers, written as one file (``_put``, in a thread) when
    the next block starts or the run ends; only then is the block durable."""

    per_file: int
    _rows: list[Row]
    _first: int | None
    _last: int | None

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
        await trio.to_thread.run_sync(self._put, first, last, rows)
        return Durable(last)

    def _put(self, first: int, last: int, rows: list[Row]) -> None:
        raise NotImplementedError


class ParquetSink(Rolling):
    """Rolls files of ``ledgers_per_file`` aligned ledgers into ``directory``."""

    name = "parquet"
    require = staticmethod(require_pyarrow)
    capabilities = Capabilities(replay="parquet", local_path="directory", backfill="files", bootstrap="file")

    def __init__(
        self,
        directory: Path,
        prefix: str,
        schema: str,
        ledgers_per_file: int,
        resume_ledger: int,
        columns: Sequence[str] | None = None,
    ) -> None:
        require_pyarrow()
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.columns = columns
        self.per_file = ledgers_per_file
        self._rows: list[Row] = []
        self._first: int | None = None
        self._last: int | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f".{prefix}-*.parquet.*.tmp"):  # a killed run's half-written file
            LOG.warning("removing a temporary file a stopped run left path=%s", stale)
            stale.unlink(missing_ok=True)
        for path in directory.iterdir():
            m = _FILE.match(path.name)
            if m and m["name"] == prefix and int(m["first"]) >= resume_ledger:
                LOG.warning("removing parquet file written after the checkpoint path=%s", path)
                path.unlink()

    def retained(self, begins_at: int) -> tuple[Retained, int | None]:
        """The directory's files, replayed to Arrow Flight clients that fell behind."""
        kind = ROW_TYPES.get(self.prefix)
        return Retained("parquet", self.directory, self.prefix, self.schema, kind, begins_at=begins_at), None

    def _put(self, first: int, last: int, rows: list[Row]) -> None:
        path = self.directory / file_name(self.prefix, first, last)
        write_table_atomically(path, to_table(rows, self.schema, ROW_TYPES.get(self.prefix), self.columns))
        LOG.info("parquet file written path=%s ledgers=%d..%d rows=%d", path, first, last, len(rows))

    def close(self) -> None:
        pass
