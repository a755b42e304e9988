"""Parquet output: full and ttp schemas, rolled files, exactly-once across a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

import cdp
from cdp._config import Config
from cdp.extract._full import extract_rows
from cdp.ops._progress import RateEstimate, render
from cdp.testing import SyntheticLedgers

pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")

SEED = 21


@pytest.fixture
async def endpoint(upstream: Any) -> str:
    return str(await upstream(seed=SEED))


def _config(endpoint: str, out: Path, **kw: Any) -> Config:
    values = {"source_endpoint": endpoint, "health_port": 0, "worker_mode": "thread", "format": "parquet",
              "output": str(out), "parquet_ledgers_per_file": 5, "start_ledger": 2, **kw}  # fmt: skip
    return Config.from_mapping(values)


def _expected(first: int, last: int) -> list[dict[str, Any]]:
    gen = SyntheticLedgers(seed=SEED)
    return [r for s in range(first, last + 1) for r in extract_rows(gen.ledger(s), gen.passphrase)]


def _read(directory: Path) -> tuple[list[str], list[dict[str, Any]]]:
    files = sorted(p.name for p in directory.glob("*.parquet"))
    rows = [r for name in files for r in pq.read_table(directory / name).to_pylist()]
    return files, rows


async def test_full_schema_rolls_aligned_files(endpoint: str, tmp_path: Path) -> None:
    """Ledgers 2..13 in blocks of 5: three files, every row with every field, JSON as text."""
    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, tmp_path, end_ledger=13))
    files, rows = _read(tmp_path)
    assert [
        "contract_data-0000000002-0000000004.parquet",
        "contract_data-0000000005-0000000009.parquet",
        "contract_data-0000000010-0000000013.parquet",
    ] == files
    want = _expected(2, 13)
    assert len(want) == len(rows)
    for got, exp in zip(rows, want, strict=True):
        assert exp["key_decoded"] == json.loads(got["key_decoded"])
        assert exp["balance"] == got["balance"]
        assert exp["closed_at"] == got["closed_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert exp["ledger_key_hash"] == got["ledger_key_hash"]


async def test_ttp_schema_has_the_original_columns_and_exact_balances(endpoint: str, tmp_path: Path) -> None:
    """--schema ttp: the 18 columns in order; balances above 2^63 stay exact; empty strings are null."""
    from cdp.sinks._parquet import TTP_COLUMNS

    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, tmp_path, end_ledger=40, schema="ttp"))
    names = pq.read_schema(str(tmp_path / "contract_data-0000000002-0000000004.parquet")).names
    assert [name for name, _ in TTP_COLUMNS] == names
    assert 18 == len(names)
    _, rows = _read(tmp_path)
    big = [r["balance"] for r in rows if r["balance"] and int(r["balance"]) >= 2**63]
    assert big
    assert all(r["asset_code"] is None or r["asset_code"] for r in rows)
    want = [r["balance"] or None for r in _expected(2, 40)]
    assert want == [r["balance"] for r in rows]


async def test_resume_removes_files_past_the_checkpoint(endpoint: str, tmp_path: Path) -> None:
    """A file written after the checkpoint (crash before it moved) is removed and written again."""
    out, cp = tmp_path / "out", tmp_path / "cp.json"
    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, out, end_ledger=7, checkpoint_path=str(cp)))
        assert 7 == json.loads(cp.read_text())["ledger"]
        stale = out / "contract_data-0000000008-0000000009.parquet"
        stale.write_bytes(b"written after the checkpoint by a run that then crashed")
        await cdp.serve(_config(endpoint, out, end_ledger=13, checkpoint_path=str(cp)))
    files, rows = _read(out)
    assert 13 == json.loads(cp.read_text())["ledger"]
    assert "contract_data-0000000008-0000000009.parquet" in files
    assert [r["ledger_key_hash"] for r in _expected(2, 13)] == [r["ledger_key_hash"] for r in rows]


def test_parquet_needs_a_directory() -> None:
    """--format parquet with stdout output is a config error naming the setting."""
    with pytest.raises(cdp.ConfigError, match="^OUTPUT=-: parquet needs a directory"):
        Config.from_mapping({"format": "parquet"})


def test_progress_line_and_its_moving_rate() -> None:
    """The bar shows count, rate, rows and ETA. The rate counts from the first completion on (a start-up
    of 100 s before it, as a cluster may take, does not make the first lines say 0.6/s), over a moving
    window, so a change of pace shows within it."""
    estimate = RateEstimate(1000, window_s=60)
    estimate.update(100.0, 10)  # the first partition, after a long start-up
    assert (None, None, "ledgers_per_s=? eta_s=?") == (estimate.rate, estimate.eta_s, estimate.fields())
    assert "[..............................] 10/1000 ledgers  -/s  0 rows  ETA --:--" == render(10, 1000, 0, estimate)
    estimate.update(104.0, 50)
    assert (10.0, 95.0, "ledgers_per_s=10.0 eta_s=95") == (estimate.rate, estimate.eta_s, estimate.fields())
    assert "[#.............................] 50/1000 ledgers  10.0/s  7 rows  ETA 01:35" == render(
        50, 1000, 7, estimate
    )
    for t in range(105, 200):  # then twice as fast: after a window, the rate is the new one
        estimate.update(float(t), 50 + 20 * (t - 104))
    assert 20.0 == estimate.rate
    estimate.update(200.0, 1000)
    assert 0.0 == estimate.eta_s


async def test_changes_mode_columns_are_typed_and_empty_files_keep_the_schema(endpoint: str, tmp_path: Path) -> None:
    """The change fields are typed (tx_index was once a string column fed ints, and failed); a file of
    ledgers without rows has the schema of the others, so such directories read as one dataset."""
    from stellar_sdk import StrKey

    nobody = StrKey.encode_contract(bytes(32))
    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, tmp_path / "rows", end_ledger=11, mode="changes"))
        await cdp.serve(_config(endpoint, tmp_path / "none", end_ledger=11, mode="changes", filter_contract_ids=nobody))
    schemas, rows = _schemas_and_rows(tmp_path)
    assert 1 == len(schemas)
    assert 0 == rows["none"] < rows["rows"]
    schema = schemas.pop()
    types = tuple(str(schema.field(n).type) for n in ("tx_index", "operation_index", "tx_hash"))
    assert ("uint32", "uint32", "string") == types


def _schemas_and_rows(root: Path) -> tuple[set[Any], dict[str, int]]:
    schemas = {pq.read_schema(p).remove_metadata() for p in root.rglob("*.parquet")}
    rows = {d.name: sum(pq.read_metadata(p).num_rows for p in d.glob("*.parquet")) for d in root.iterdir()}
    return schemas, rows


def test_json_text_columns_are_json_even_when_every_value_is_a_string() -> None:
    """A block where every key is the instance key (``key_decoded`` a bare JSON string) must still hold
    JSON text, or a reader cannot tell ``"x"`` from ``x``."""
    from cdp.extract._rows import ContractDataRow
    from cdp.sinks._parquet import to_table

    rows = [r for r in _expected(2, 13) if isinstance(r["key_decoded"], str)]
    assert rows, "the synthetic ledgers have instance keys"
    table = to_table(rows, "full", ContractDataRow)
    assert [json.loads(v) for v in table.column("key_decoded").to_pylist()] == [r["key_decoded"] for r in rows]


@pytest.mark.parametrize("schema", ["full", "ttp"])
def test_rows_from_table_inverts_to_table(schema: str) -> None:
    """What replay (Arrow Flight) serves from a Parquet output: the rows that made it."""
    from cdp.extract._rows import ContractDataRow, row_fields
    from cdp.sinks._parquet import rows_from_table, to_table

    rows = _expected(2, 13)
    columns = row_fields("compact", True)
    table = to_table(rows, schema, ContractDataRow, columns)
    again = rows_from_table(table, schema, ContractDataRow)
    if schema == "full":
        assert again == rows
    assert to_table(again, schema, ContractDataRow, columns).equals(table)


def test_rows_lacking_a_column_give_nulls_and_closed_at_is_the_instant() -> None:
    """A processor's rows need not all carry every column (a custom one's, or ``columns`` wider than the
    rows): the missing values are nulls; the close time is the same instant whatever the unit."""
    import datetime as dt

    from cdp.extract._rows import ContractDataRow
    from cdp.sinks._parquet import to_table

    rows: list[dict[str, Any]] = [{"a": 1, "b": "x"}, {"a": 2}]
    assert {"a": [1, 2], "b": ["x", None]} == to_table(rows, "full", None, ("a", "b")).to_pydict()
    closed = [row["closed_at"] for row in _expected(2, 3)]
    parsed = [dt.datetime.strptime(c, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) for c in closed]
    assert parsed == to_table(_expected(2, 3), "full", ContractDataRow).column("closed_at").to_pylist()


async def test_restored_keys_to_parquet_and_jsonl(endpoint: str, tmp_path: Path) -> None:
    """`PROCESSOR=restored_keys` through the service: typed Parquet files and JSONL, the same rows the
    extractor gives, restores of the synthetic ledgers included."""
    from cdp.extract._restores import restored_rows

    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, tmp_path / "pq", end_ledger=40, processor="restored_keys"))
        await cdp.serve(_config(endpoint, tmp_path / "rows.jsonl", end_ledger=40, processor="restored_keys",
                                format="jsonl"))  # fmt: skip
    gen = SyntheticLedgers(seed=SEED)
    want = [r for s in range(2, 41) for r in restored_rows(gen.ledger(s))[0]]
    assert want
    assert all(r["live_until_ledger_seq"] for r in want)
    files, rows = _read(tmp_path / "pq")
    assert files[0].startswith("restored_keys-0000000002-")
    assert [r["ledger_key_hash"] for r in want] == [r["ledger_key_hash"] for r in rows]
    assert {"contract_id", "live_until_ledger_seq", "tx_hash"} <= set(rows[0])
    assert want == [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]


async def test_a_killed_runs_temporary_file_is_removed_at_the_next_start(endpoint: str, tmp_path: Path) -> None:
    stale = tmp_path / ".contract_data-0000000002-0000000004.parquet.0123abcd.tmp"
    stale.write_bytes(b"PAR1 half a file")
    other = tmp_path / ".ttl-0000000002-0000000004.parquet.0123abcd.tmp"  # another processor's: not ours to take
    other.write_bytes(b"x")
    with trio.fail_after(60):
        await cdp.serve(_config(endpoint, tmp_path, end_ledger=4))
    assert not stale.exists()
    assert other.exists()
