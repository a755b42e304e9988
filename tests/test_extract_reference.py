"""The extractor against the rows stellar-etl's rules give for real ledgers (``../shared``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from stellar_sdk import xdr

from cdp.extract._changes import Change, decode_ledger
from cdp.extract._full import contract_data_row, rows_from_meta
from cdp.extract._rows import CHANGE_FIELDS, ETL_FIELDS, INSTANCE_FIELDS

from .conftest import GOLDEN, LEDGERS, expected_rows, needs_shared, shared_index

ENTRIES = shared_index()


def _project(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    keys = ETL_FIELDS + ("live_until_ledger_seq",) + (CHANGE_FIELDS if mode == "changes" else ())
    return [{k: r[k] for k in keys} for r in rows]


@needs_shared
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_every_shared_ledger_matches_expected_rows(entry: dict[str, Any]) -> None:
    """Both modes equal ../shared/expected as parsed JSON, for every shared ledger."""
    lcm = decode_ledger((LEDGERS / entry["file"]).read_bytes())
    for mode in ("compact", "changes"):
        rows = rows_from_meta(lcm, entry["passphrase"], mode)  # type: ignore[arg-type]
        assert expected_rows(mode, entry["file"]) == _project(rows, mode)
        assert entry[f"{mode}_rows"] == len(rows)
        for row in rows:
            assert set(INSTANCE_FIELDS) <= set(row)


@needs_shared
def test_golden_rows_rederive_from_their_contract_data_xdr() -> None:
    """All 84 rows stellar-etl produced: every per-entry field re-derives from contract_data_xdr."""
    if not GOLDEN.is_file():
        pytest.skip(f"golden file not found at {GOLDEN}")
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]
    assert 84 == len(golden)
    passphrase = "Public Global Stellar Network ; September 2015"
    for want in golden:
        cd = xdr.ContractDataEntry.from_xdr(want["contract_data_xdr"])
        entry = xdr.LedgerEntry(
            xdr.Uint32(want["last_modified_ledger"]),
            xdr.LedgerEntryData(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=cd),
            xdr.LedgerEntryExt(0),
        )
        kind = want["ledger_entry_change"]
        change = Change(kind, entry if kind == 2 else None, None if kind == 2 else entry, "operation")
        got = contract_data_row(change, want["ledger_sequence"], 0, passphrase)
        assert got is not None
        fields = [f for f in ETL_FIELDS if f not in ("closed_at", "ledger_key_hash_base_64")]
        assert {f: want[f] for f in fields} == {f: got[f] for f in fields}
        assert base64.b64decode(got["ledger_key_hash_base_64"])[:4] == b"\x00\x00\x00\x06"
    assert any(r["balance_holder"] for r in golden)
