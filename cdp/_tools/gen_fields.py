"""Write ``schema/fields.md``, the field dictionary: every column of every processor's rows and of the
PostgreSQL tables, with its JSONL, Parquet and PostgreSQL types (read from the row definitions) and
its meaning and XDR source (``_field_docs``).

Run: ``python -m cdp._tools.gen_fields schema/fields.md`` (``just gen``; needs pyarrow); a test fails
when the file and the row definitions drift apart, or a column has no description.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, Final

from cdp.extract._rows import (
    JSON_TEXT,
    UTC_TIMESTAMP,
    ContractDataRow,
    EvictedKeyRow,
    RestoredKeyRow,
    TtlRow,
    field_types,
)
from cdp.sinks._lake import iceberg_type
from cdp.sinks._parquet import TTP_COLUMNS, arrow_type
from cdp.sinks._pg_rows import CURRENT_COLUMNS, HISTORY_COLUMNS

from ._field_docs import FIELDS

PROCESSORS: Final = (
    ("contract_data", ContractDataRow, "the default: one row per contract-data change (stellar-etl's contract_data)"),
    ("ttl", TtlRow, "one row per TTL change (stellar-etl's ttl)"),
    ("evicted_keys", EvictedKeyRow, "the contract-data keys a ledger evicts (LedgerCloseMeta v1/v2 evictedKeys)"),
    ("restored_keys", RestoredKeyRow, "one row per RESTORED change of contract data or code (protocol 23+)"),
)
_PG: Final = dict(HISTORY_COLUMNS)

TAIL: Final = """
## `ledger_entry_change` codes

| code | XDR | in `compact` mode |
|---|---|---|
| 0 | `LEDGER_ENTRY_CREATED` | created in the ledger (also created then updated) |
| 1 | `LEDGER_ENTRY_UPDATED` | updated (also removed then created again) |
| 2 | `LEDGER_ENTRY_REMOVED` | removed (`deleted` true; the row shows the entry before) |
| 4 | `LEDGER_ENTRY_RESTORED` | restored from archival (also restored then updated) |

Code 3 (`LEDGER_ENTRY_STATE`, the entry before a change) is never a row. In `changes` mode every
change is a row, in `LedgerChangeReader` order; in `compact` mode a key's changes in one ledger merge
as Go's `ChangeCompactor` merges them, and rows sort by `ledger_key_hash`.

## `key_decoded` and `val_decoded`

An ScVal in stellar-sdk's JSON form (`SCVal.to_json_dict`, which stellar-etl's decoded columns also
follow): an object with one member named after the type, e.g. `{"bool": true}`, `{"u32": 7}`,
`{"i32": -7}`, `{"symbol": "Balance"}`, `{"string": "…"}`, `{"bytes": "<hex>"}`,
`{"address": "C…"}`, `{"vec": [ScVal, …]}`, `{"map": [{"key": ScVal, "val": ScVal}, …]}`; 64-bit and
wider integers as decimal text, exact in every JSON reader (`{"u64": "…"}`, `{"i64": "…"}`,
`{"timepoint": "…"}`, `{"duration": "…"}`, `{"u128": "…"}`, `{"i128": "…"}`, `{"u256": "…"}`,
`{"i256": "…"}`); `"void"` and `"ledger_key_contract_instance"` as bare strings;
`{"ledger_key_nonce": {"nonce": "…"}}`; and an instance as `{"contract_instance": {"executable":
{"wasm": "<hex>"} | "stellar_asset", "storage": [map entries] | null}}`. In Parquet it is the same
JSON as compact text; in PostgreSQL `jsonb`.

## Why `balance` is text

An i128 amount does not fit any JSON number every reader keeps exact, nor any Parquet integer type:
JSONL and Parquet carry it as decimal text (empty where the row is no SAC balance, as in
stellar-etl). PostgreSQL has an exact type for it: `numeric(39,0)` (NULL where the text is empty).

## The `ttp` schema

`SCHEMA=ttp` writes the original Go service's 18 Parquet columns instead of every row field (and the
Arrow Flight descriptor `["contract", "data"]` serves them): its empty strings are nulls.
"""


def jsonl_type(hint: Any) -> str:
    """How a field's value looks in a JSON line."""
    if typing.get_origin(hint) in (typing.NotRequired, typing.Required):
        hint = typing.get_args(hint)[0]
    marker = None
    if typing.get_origin(hint) is typing.Annotated:
        marker, hint = hint.__metadata__[0], hint.__origin__
    if marker == UTC_TIMESTAMP:
        return "string (`YYYY-MM-DDTHH:MM:SSZ`)"
    if marker == JSON_TEXT:
        return "JSON (ScVal)"
    args = typing.get_args(hint)
    nullable = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    name = {str: "string", int: "integer", bool: "boolean"}.get(base, "JSON")
    return f"{name} or null" if nullable else name


def _describe(name: str) -> tuple[str, str]:
    if name not in FIELDS:
        raise KeyError(f"column {name!r} has no description in cdp/_tools/_field_docs.py")
    return FIELDS[name]


def _row_table(row_type: type, postgres: bool) -> list[str]:
    head = "| column | JSONL | Parquet | Iceberg | PostgreSQL | meaning | from the XDR |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, hint in field_types(row_type).items():
        meaning, source = _describe(name)
        pg = f"`{_PG[name]}`" if postgres and name in _PG else "-"
        parquet = arrow_type(hint, "ms")
        iceberg = iceberg_type(parquet)
        lines.append(f"| `{name}` | {jsonl_type(hint)} | `{parquet}` | `{iceberg}` | {pg} | {meaning} | {source} |")
    return lines


def document() -> str:
    out = [
        "# Field dictionary",
        "",
        "<!-- generated by `just gen` (cdp/_tools/gen_fields.py) from the row definitions; do not edit -->",
        "",
        "Every column any output can hold: JSONL (`FORMAT=jsonl`, stdout, `cdp extract`), Parquet",
        "(`FORMAT=parquet`, `cdp backfill`, local or object storage), Iceberg (`OUTPUT=iceberg://…`: every",
        "column optional, the table partitioned by `truncate(ledger_sequence, PARQUET_LEDGERS_PER_FILE)`) and",
        "PostgreSQL (`OUTPUT=postgresql://…`, contract_data only).",
        "A column marked `NotRequired` in the row definition is present only where its setting asks:",
        "the instance extras unless `INSTANCE_EXTRAS=false`, the change fields (`tx_hash`, `tx_index`,",
        "`operation_index`, `change_group`) only in `MODE=changes`.",
    ]
    for name, row_type, what in PROCESSORS:
        out += ["", f"## `PROCESSOR={name}`", "", what + ".", ""]
        out += _row_table(row_type, postgres=name == "contract_data")
    out += [
        "",
        "## PostgreSQL tables",
        "",
        "`PREFIX_history` holds every contract_data row with the types above plus `row_in_ledger`; its key",
        "is `(ledger_sequence, row_in_ledger)`. `PREFIX_current` holds one row per live key:",
        "",
        "| column | PostgreSQL | meaning |",
        "|---|---|---|",
    ]
    for name, kind in (("ledger_key_hash", "text PRIMARY KEY"), *CURRENT_COLUMNS,
                       ("archived", "boolean NOT NULL DEFAULT false"), ("archived_at_ledger", "bigint")):  # fmt: skip
        out.append(f"| `{name}` | `{kind}` | {_describe(name)[0]} |")
    out += [
        "| `row_in_ledger` (history only) | `integer NOT NULL` | " + _describe("row_in_ledger")[0] + " |",
        "| `valid_until_ledger` (history only) | `bigint` | " + _describe("valid_until_ledger")[0] + " |",
        "",
        "`PREFIX_ttl_history (key_hash, ledger_sequence, live_until_ledger_seq)`: every TTL the current table",
        "takes (null where the key lost it). `PREFIX_at(ledger)`: the state at a ledger (each key's history",
        "row holding there, its TTL there, `expired`). `PREFIX_sac_balances`: verified SAC balances (a view).",
        "",
        "`cdp_checkpoint (name text PRIMARY KEY, ledger bigint NOT NULL)`: the last committed ledger per",
        "`schema.prefix`, written in the same transaction as its rows. `cdp_schema (name, version)`: the",
        "tables' layout version.",
        "",
        "## `SCHEMA=ttp` columns",
        "",
        "| column | from the row field | Parquet | Iceberg |",
        "|---|---|---|---|",
    ]
    hints = field_types(ContractDataRow)
    for column, source in TTP_COLUMNS:
        kind = arrow_type(hints[source], "us")
        out.append(f"| `{column}` | `{source}` | `{kind}` | `{iceberg_type(kind)}` |")
    return "\n".join(out) + "\n" + TAIL


def main() -> None:
    Path(sys.argv[1]).write_text(document())


if __name__ == "__main__":
    main()
