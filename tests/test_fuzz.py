"""Mutated ledgers (hypothesis): the only outcomes are the reference rows or a clean per-ledger error."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp._errors import LedgerDecodeError
from cdp.extract._fast import extract_rows_fast
from cdp.extract._full import extract_rows
from cdp.testing import SyntheticLedgers

GEN = SyntheticLedgers(seed=77, soroban_txs=3)
SEEDS = [GEN.ledger(s) for s in range(2, 8)]


def outcome(fn: Any, raw: bytes) -> Any:
    try:
        return fn(raw)
    except LedgerDecodeError as exc:
        return ("error", str(exc))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "dup", "drop"]))
        at = draw(st.integers(0, len(raw) - 1)) & ~3
        if kind == "flip":
            raw[at + draw(st.integers(0, 3))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            value = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 9, 15, 16, 17, 18, 0x7FFFFFFF, 0xFFFFFFFF]))
            raw[at : at + 4] = value.to_bytes(4, "big")
        elif kind == "cut":
            del raw[at:]
        elif kind == "dup":
            raw[at:at] = raw[at : at + 4 * draw(st.integers(1, 8))]
        else:
            del raw[at : at + 4 * draw(st.integers(1, 8))]
        if not raw:
            break
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_give_reference_rows_or_clean_errors(raw: bytes) -> None:
    """Fast path and full decode agree exactly, and neither raises anything but LedgerDecodeError."""
    passphrase = GEN.passphrase
    reference = outcome(lambda r: extract_rows(r, passphrase, "changes"), raw)
    fast = outcome(lambda r: extract_rows_fast(r, passphrase, "changes")[0], raw)
    assert reference == fast
