"""The header peek agrees with a full decode and rejects what is not a header."""

from __future__ import annotations

import pytest

from cdp._errors import LedgerDecodeError
from cdp.extract._changes import decode_ledger, ledger_info
from cdp.testing import SyntheticLedgers
from cdp.xdr._header import peek_header

from .conftest import LEDGERS, needs_shared, shared_index


@needs_shared
def test_peek_matches_full_decode_on_small_shared_ledgers() -> None:
    """Sequence, close time and protocol equal the full decode's, for v0, v1 and v2."""
    seen = set()
    for entry in shared_index():
        if entry["bytes"] > 50_000:
            continue
        raw = (LEDGERS / entry["file"]).read_bytes()
        info = ledger_info(decode_ledger(raw))
        facts = peek_header(raw)
        assert (info.sequence, info.close_time, info.protocol) == (facts.sequence, facts.close_time, facts.protocol)
        seen.add(facts.meta_version)
    assert {0, 1, 2} == seen


def test_peek_on_synthetic() -> None:
    """Synthetic ledgers carry their sequence and deterministic close time."""
    gen = SyntheticLedgers(seed=3)
    facts = peek_header(gen.ledger(1234))
    assert 1234 == facts.sequence
    assert gen.close_time(1234) == facts.close_time


@pytest.mark.parametrize(
    "raw", [b"", b"\x00\x00\x00\x02", b"\x00\x00\x00\x09" + b"\x00" * 400, b"\x00\x00\x00\x01" * 3]
)
def test_peek_rejects_garbage(raw: bytes) -> None:
    """Truncated or unknown input is a LedgerDecodeError, never another exception."""
    with pytest.raises(LedgerDecodeError):
        peek_header(raw)
