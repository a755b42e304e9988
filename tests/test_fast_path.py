"""The fast path's rows equal the full decode's, everywhere; what it cannot vouch for falls back."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cdp._errors import LedgerDecodeError
from cdp.extract._fast import extract_rows_fast
from cdp.extract._full import extract_rows
from cdp.extract._walk import read_raw_changes
from cdp.testing import SyntheticLedgers

from .conftest import LEDGERS, needs_shared, shared_index

ENTRIES = shared_index()


@needs_shared
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_fast_equals_full_on_every_shared_ledger(entry: dict[str, Any]) -> None:
    """Both modes, every field (extras included), and the walk never needed the fallback."""
    raw = (LEDGERS / entry["file"]).read_bytes()
    for mode in ("compact", "changes"):
        fast, fell_back = extract_rows_fast(raw, entry["passphrase"], mode)  # type: ignore[arg-type]
        assert not fell_back
        assert extract_rows(raw, entry["passphrase"], mode) == fast  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_full_on_random_synthetic_ledgers(seed: int) -> None:
    """Randomized synthetic ledgers (v1 and v2, padded or not, dense or sparse) give identical rows."""
    rng = random.Random(seed)
    gen = SyntheticLedgers(seed=seed, soroban_txs=rng.randint(1, 12), ledger_bytes=rng.choice((0, 0, 30_000)))
    for seq in rng.sample(range(2, 10_000), 8):
        raw = gen.ledger(seq)
        for mode in ("compact", "changes"):
            fast, fell_back = extract_rows_fast(raw, gen.passphrase, mode)  # type: ignore[arg-type]
            assert not fell_back
            assert extract_rows(raw, gen.passphrase, mode) == fast  # type: ignore[arg-type]


def _flip_padding_in_a_key(raw: bytes) -> bytes:
    """Set a padding byte inside the first contract-data key with a symbol of odd length."""
    _, changes = read_raw_changes(raw)
    for c in changes:
        rng = c.pre or c.post
        assert rng is not None
        body = raw[rng[0] : rng[1]]
        at = body.find(b"\x00\x00\x00\x0f\x00\x00\x00\x07Balance\x00")  # SCV_SYMBOL, length 7, text, pad
        if at >= 0:
            pos = rng[0] + at + 8 + 7
            return raw[:pos] + b"\x01" + raw[pos + 1 :]
    raise AssertionError("no Balance key found")


def test_non_canonical_key_bytes_fall_back_to_the_full_decode() -> None:
    """A non-zero padding byte is legal for the sdk decoder but not canonical: the fast path defers."""
    gen = SyntheticLedgers(seed=1, soroban_txs=8)
    raw = _flip_padding_in_a_key(gen.ledger(77))
    rows, fell_back = extract_rows_fast(raw, gen.passphrase)
    assert fell_back
    assert extract_rows(raw, gen.passphrase) == rows


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[:-4],  # truncated
        lambda raw: raw + b"\x00\x00\x00\x00",  # trailing bytes
        lambda raw: b"\x00\x00\x00\x09" + raw[4:],  # unknown LedgerCloseMeta version
        lambda raw: raw[:-1],  # not a multiple of 4
    ],
    ids=["truncated", "trailing", "version", "unaligned"],
)
def test_malformed_ledgers_give_the_full_decode_error(mutate: Any) -> None:
    """Whatever the walk rejects, the full decode judges: the same error as without the fast path."""
    gen = SyntheticLedgers(seed=2)
    raw = mutate(gen.ledger(10))
    with pytest.raises(LedgerDecodeError) as full:
        extract_rows(raw, gen.passphrase)
    with pytest.raises(LedgerDecodeError) as fast:
        extract_rows_fast(raw, gen.passphrase)
    assert str(full.value) == str(fast.value)


@pytest.mark.parametrize("walker", ["active", "python"])
def test_state_from_one_walk_equals_the_full_decode(walker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows, TTLs and evicted keys from the walk (either walker) equal the full decode's, on synthetic
    ledgers that evict temporary (v1, v2) and persistent (v2) keys."""
    from cdp.extract import _walk
    from cdp.extract._fast import extract_state_fast, extract_state_full
    from cdp.xdr import _skip

    if walker == "python":
        monkeypatch.setattr(_walk, "_SCAN_LEDGER", None)
        monkeypatch.setattr(_walk, "ws", _skip)
    evicted = 0
    for seed in (3, 8):
        gen = SyntheticLedgers(seed=seed)
        for seq in range(2, 30):
            raw = gen.ledger(seq)
            fast = extract_state_fast(raw, gen.passphrase)
            assert not fast.fell_back
            assert extract_state_full(raw, gen.passphrase) == fast
            evicted += len(fast.evictions)
    assert evicted > 10
