"""stellar-core's own unit-test runs (``../shared/core-unittest-streams``): evictions and restores on
protocols 23-28, every row against the independent reference extractor (``tests/reference.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cdp.extract import extract_rows_fast
from cdp.extract._changes import decode_ledger
from cdp.extract._full import rows_from_meta
from cdp.extract._restores import restored_rows, restored_rows_full

from . import reference
from .conftest import SHARED

STREAMS = Path(os.environ.get("CDP_CORE_STREAMS", SHARED / "core-unittest-streams"))
PASSPHRASE = "(V) (;,,;) (V)"  # stellar-core's unit-test network
INDEX: dict[str, Any] = json.loads((STREAMS / "index.json").read_text()) if (STREAMS / "index.json").is_file() else {}
needs_streams = pytest.mark.skipif(
    not INDEX, reason=f"core unit-test streams not found at {STREAMS} (set CDP_CORE_STREAMS to point at them)"
)


def split_stream(data: bytes) -> list[bytes]:
    """A record-marked stream (RFC 5531: a 4-byte big-endian length, top bit set, one fragment each)."""
    out, o = [], 0
    while o < len(data):
        mark = int.from_bytes(data[o : o + 4], "big")
        assert mark & 0x8000_0000, f"fragmented record at byte {o}"
        size = mark & 0x7FFF_FFFF
        out.append(data[o + 4 : o + 4 + size])
        o += 4 + size
    return out


@needs_streams
@pytest.mark.parametrize("name", sorted(INDEX))
def test_rows_and_restores_equal_the_reference(name: str) -> None:
    """Both modes, fast walk and full decode, equal the reference's rows (TTLs of restored rows included);
    ``restored_keys`` rows are the RESTORED changes one for one."""
    facts = INDEX[name]
    ledgers = split_stream((STREAMS / name).read_bytes())
    assert facts["last_ledger"] - facts["first_ledger"] + 1 == len(ledgers)
    restores = 0
    for raw in ledgers:
        lcm = decode_ledger(raw)
        for mode in ("compact", "changes"):
            want = reference.rows(lcm, mode)
            keys = reference.FIELDS + (reference.CHANGE_FIELDS if mode == "changes" else ())
            fast, _ = extract_rows_fast(raw, PASSPHRASE, mode)  # type: ignore[arg-type]
            full = rows_from_meta(lcm, PASSPHRASE, mode)  # type: ignore[arg-type]
            assert want == [{k: r[k] for k in keys} for r in fast]
            assert want == [{k: r[k] for k in keys} for r in full]
            assert fast == full
        want_restored = reference.restored(lcm)
        got, fell_back = restored_rows(raw)
        assert not fell_back
        assert got == restored_rows_full(raw)
        assert want_restored == [
            (r["ledger_key_hash"], r["ledger_entry_type"], r["live_until_ledger_seq"], r["tx_hash"]) for r in got
        ]  # fmt: skip
        restores += sum(r["ledger_entry_type"] == "LedgerEntryTypeContractData" for r in got)
    assert facts["restored_changes"] == restores  # the README's count of RESTORED contract-data changes


@needs_streams
def test_restored_rows_carry_the_ttl_their_ledger_gives() -> None:
    """Across all 82 runs, every restored contract-data row has its TTL (55 lacked it before)."""
    restored_rows_seen = with_ttl = 0
    for name in sorted(INDEX):
        for raw in split_stream((STREAMS / name).read_bytes()):
            rows, _ = extract_rows_fast(raw, PASSPHRASE, "changes")
            for row in rows:
                if row["ledger_entry_change"] == 4:
                    restored_rows_seen += 1
                    with_ttl += row["live_until_ledger_seq"] is not None
    assert restored_rows_seen >= 55
    assert with_ttl == restored_rows_seen
