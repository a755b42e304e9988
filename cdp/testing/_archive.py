"""History archives written for tests: the contract-data state that a run of synthetic ledgers leaves
at a checkpoint, as a real archive lays it out (HAS, a checkpoint header whose bucket-list hash
matches, gzipped buckets named by their sha256), so ``cdp bootstrap`` there and ``cdp run`` on from
the next ledger can be compared with a replay from the start.

Only the parts a bootstrap reads are written: the contract-data and TTL entries (one level-0 bucket;
the other levels empty), and, where persistent entries were evicted, a hot-archive bucket list
(HAS version 2) holding them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from stellar_sdk import xdr

from cdp.extract._changes import CONTRACT_DATA, REMOVED, TTL
from cdp.extract._walk import ledger_key, read_raw_state
from cdp.xdr._buckets import EMPTY, INIT, bucket_list_hash

from ._synthetic import SyntheticLedgers

LEVELS = 11
_PERSISTENT = (1).to_bytes(4, "big")


def replay_state(ledgers: Iterable[bytes]) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """The contract-data and TTL entries live after ``ledgers`` (``LedgerKey`` -> ``LedgerEntry`` bytes), and
    the persistent contract-data entries evicted from them (the hot archive), by replaying each
    ledger's changes in order: a removal deletes, any other change writes, an eviction moves a
    persistent entry to the hot archive and drops a temporary one."""
    live: dict[bytes, bytes] = {}
    hot: dict[bytes, bytes] = {}
    for raw in ledgers:
        _, changes, evicted = read_raw_state(raw)
        for c in changes:
            if c.etype not in (CONTRACT_DATA, TTL):
                continue
            rng = c.pre if c.change_type == REMOVED else c.post
            assert rng is not None
            key = c.key or ledger_key(raw, rng, c.etype)
            if c.change_type == REMOVED:
                live.pop(key, None)
            else:
                live[key] = raw[rng[0] : rng[1]]
                hot.pop(key, None)
        for key in evicted:
            entry = live.pop(key, None)
            if entry is not None and key[:4] == CONTRACT_DATA.to_bytes(4, "big") and key.endswith(_PERSISTENT):
                hot[key] = entry
    return live, hot


def _bucket(root: Path, records: list[bytes]) -> str:
    """Write a bucket of record-marked entries; its name (the sha256 of its bytes)."""
    plain = b"".join((0x80000000 | len(r)).to_bytes(4, "big") + r for r in records)
    name = hashlib.sha256(plain).hexdigest()
    path = root / "bucket" / name[0:2] / name[2:4] / name[4:6] / f"bucket-{name}.xdr.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(plain))
    return name


def _hex_path(root: Path, kind: str, ledger: int, suffix: str) -> Path:
    h = f"{ledger:08x}"
    path = root / kind / h[0:2] / h[2:4] / h[4:6] / f"{kind}-{h}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_archive(root: Path, gen: SyntheticLedgers, checkpoint: int, first: int = 2) -> dict[str, int]:
    """An archive at ``root`` whose checkpoint ``checkpoint`` holds the state ledgers ``first..checkpoint``
    of ``gen`` leave; returns how many live and hot entries it holds.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint ledger.
    """
    if (checkpoint + 1) % 64:
        raise ValueError(f"{checkpoint} is not a checkpoint ledger")
    live, hot = replay_state(gen.ledger(s) for s in range(first, checkpoint + 1))
    init = INIT.to_bytes(4, "big", signed=True)
    levels = [(_bucket(root, [init + e for e in live.values()]), EMPTY)] + [(EMPTY, EMPTY)] * (LEVELS - 1)
    has: dict[str, object] = {
        "version": 2 if hot else 1,
        "server": "cdp.testing",
        "currentLedger": checkpoint,
        "networkPassphrase": gen.passphrase,
        "currentBuckets": [{"curr": c, "next": {"state": 0}, "snap": s} for c, s in levels],
    }
    list_hash = bucket_list_hash(levels)
    if hot:
        archived = (0).to_bytes(4, "big")  # HOT_ARCHIVE_ARCHIVED
        hot_levels = [(_bucket(root, [archived + e for e in hot.values()]), EMPTY)] + [(EMPTY, EMPTY)] * (LEVELS - 1)
        has["hotArchiveBuckets"] = [{"curr": c, "next": {"state": 0}, "snap": s} for c, s in hot_levels]
        list_hash = hashlib.sha256(list_hash + bucket_list_hash(hot_levels)).digest()
    text = json.dumps(has, indent=1)
    _hex_path(root, "history", checkpoint, ".json").write_text(text)
    well_known = root / ".well-known" / "stellar-history.json"
    well_known.parent.mkdir(parents=True, exist_ok=True)
    well_known.write_text(text)
    entry = gen.ledger_meta(checkpoint)
    body = entry.v2 or entry.v1 or entry.v0
    assert body is not None
    header = body.ledger_header
    header.header.bucket_list_hash = xdr.Hash(list_hash)
    record = header.to_xdr_bytes()
    _hex_path(root, "ledger", checkpoint, ".xdr.gz").write_bytes(
        gzip.compress((0x80000000 | len(record)).to_bytes(4, "big") + record)
    )
    return {"live": len(live), "hot": len(hot)}
