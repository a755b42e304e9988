"""Synthetic ledgers are deterministic and cover what the real data lacks."""

from __future__ import annotations

import json
from collections import Counter

from cdp.extract._changes import decode_ledger
from cdp.extract._full import extract_rows
from cdp.testing import SyntheticLedgers


def test_same_bytes_whatever_the_order() -> None:
    """A ledger is a pure function of (seed, sequence): order and instance do not matter."""
    a = SyntheticLedgers(seed=7)
    forward = [a.ledger(s) for s in range(100, 110)]
    b = SyntheticLedgers(seed=7)
    backward = [b.ledger(s) for s in reversed(range(100, 110))][::-1]
    assert forward == backward
    assert SyntheticLedgers(seed=8).ledger(100) != forward[0]


def test_both_meta_versions_and_every_kind_of_row() -> None:
    """Over a few dozen ledgers: LCM v1 and v2, SAC instances and balances, i128 extremes, all change kinds."""
    gen = SyntheticLedgers(seed=1)
    versions: Counter[int] = Counter()
    kinds: Counter[int] = Counter()
    assets, big, negative_seen, per_ledger = set(), False, False, []
    for seq in range(2, 60):
        raw = gen.ledger(seq)
        versions[decode_ledger(raw).v] += 1
        rows = extract_rows(raw, gen.passphrase, "changes")
        per_ledger.append(len(rows))
        for r in rows:
            kinds[r["ledger_entry_change"]] += 1
            if r["asset_code"]:
                assets.add((r["asset_type"], r["asset_code"]))
            if r["balance"] and int(r["balance"]) >= 2**63:
                big = True
            key = r["key_decoded"]
            is_balance_key = isinstance(key, dict) and key.get("vec", [None])[0] == {"symbol": "Balance"}
            if is_balance_key and '"i128":"-' in json.dumps(r["val_decoded"], separators=(",", ":")):
                negative_seen = True
                assert "" == r["balance"]
    assert {1, 2} == set(versions)
    assert {0, 1, 2, 4} <= set(kinds)
    assert {"credit_alphanum4", "credit_alphanum12"} == {t for t, _ in assets}
    assert big
    assert negative_seen
    assert min(per_ledger) >= 1


def test_padding_reaches_pubnet_size() -> None:
    """ledger_bytes pads with classic fee changes that yield no rows."""
    gen = SyntheticLedgers(seed=2, ledger_bytes=300_000)
    raw = gen.ledger(50)
    assert 250_000 < len(raw) < 350_000
    assert extract_rows(raw, gen.passphrase) == extract_rows(SyntheticLedgers(seed=2).ledger(50), gen.passphrase)
