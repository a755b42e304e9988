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

from cdp.extract._changes import CONTRACT_DATA, REMOVED, RESTORED, TTL
from cdp.extract._walk import ledger_key, read_raw_state
from cdp.upstream._archive import bucket_key, header_key, hex_path, is_checkpoint
from cdp.xdr._buckets import EMPTY, INIT, bucket_list_hash

from ._synthetic import SyntheticLedgers

LEVELS = 11
_PERSISTENT = (1).to_bytes(4, "big")
_TTL_PREFIX = TTL.to_bytes(4, "big")


class StateReplay:
    """The contract-data and TTL entries live (``LedgerKey`` -> ``LedgerEntry`` bytes) and the persistent
    contract-data entries evicted (the hot archive), ledger by ledger: a removal deletes, any other
    change writes (and takes a key out of the hot archive; a ledger leaves a key the largest TTL it
    sets), an eviction moves a persistent entry to the hot archive and drops a temporary one. Where
    synthetic ledgers delete a key but not its TTL, make a key again after removing it in the same
    ledger, or change an archived key without restoring it (no network does), the key is noted
    ``irregular``: what follows is a matter of convention.
    Independent of the sinks: tests compare them with it."""

    def __init__(self) -> None:
        self.live: dict[bytes, bytes] = {}
        self.hot: dict[bytes, bytes] = {}
        self.hot_ttls: dict[bytes, bytes] = {}  # an archived key's TTL entry when it was evicted
        self.irregular: set[bytes] = set()  # key hashes that went where no network goes (see the class)

    def apply(self, raw: bytes) -> None:
        _, changes, evicted = read_raw_state(raw)
        removed: set[bytes] = set()  # hashes of the keys the ledger deletes
        ttls: list[tuple[bytes, bytes | None]] = []
        for c in changes:
            if c.etype not in (CONTRACT_DATA, TTL):
                continue
            rng = c.pre if c.change_type == REMOVED else c.post
            assert rng is not None
            key = c.key or ledger_key(raw, rng, c.etype)
            entry = None if c.change_type == REMOVED else raw[rng[0] : rng[1]]
            if c.etype == TTL:
                ttls.append((key, entry))
            elif entry is None:
                self.live.pop(key, None)
                removed.add(hashlib.sha256(key).digest())
            else:
                self.live[key] = entry
                if self.hot.pop(key, None) is not None and c.change_type != RESTORED:  # changed while archived
                    self.irregular.add(hashlib.sha256(key).digest())
                if hashlib.sha256(key).digest() in removed:  # made again after its removal, in one ledger
                    self.irregular.add(hashlib.sha256(key).digest())
                removed.discard(hashlib.sha256(key).digest())
        largest: dict[bytes, bytes] = {}  # a TTL only grows within a ledger (CAP-63): the largest it sets
        for key, entry in ttls:
            if entry is None:
                self.live.pop(key, None)
                largest.pop(key, None)
                removed.discard(key[4:])
            elif key not in largest or entry[40:44] > largest[key][40:44]:
                largest[key] = entry
        self.live.update(largest)
        self.irregular |= {h for h in removed if _TTL_PREFIX + h in self.live}
        for key in evicted:
            gone = self.live.pop(key, None)
            if gone is not None and key[:4] == CONTRACT_DATA.to_bytes(4, "big") and key.endswith(_PERSISTENT):
                self.hot[key] = gone
                ttl = self.live.get(_TTL_PREFIX + hashlib.sha256(key).digest())
                if ttl is not None:
                    self.hot_ttls[hashlib.sha256(key).digest()] = ttl  # the TTL that ran out


def replay_state(ledgers: Iterable[bytes]) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """``StateReplay`` over ``ledgers``: the live entries and the hot archive they leave."""
    replay = StateReplay()
    for raw in ledgers:
        replay.apply(raw)
    return replay.live, replay.hot


def marked(records: Iterable[bytes]) -> bytes:
    """Records as a bucket holds them: each after its RFC 5531 record mark."""
    return b"".join((0x80000000 | len(r)).to_bytes(4, "big") + r for r in records)


def write_bucket(root: Path, plain: bytes, level: int = 6) -> str:
    """Write a bucket (``plain``: its record-marked bytes) where an archive keeps it; its name."""
    name = hashlib.sha256(plain).hexdigest()
    path = root / bucket_key(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(plain, compresslevel=level))
    return name


def write_checkpoint(
    root: Path, gen: SyntheticLedgers, checkpoint: int, live: list[tuple[str, str]],
    hot: list[tuple[str, str]] | None = None,
) -> None:  # fmt: skip
    """The checkpoint's HAS (also as the latest) and its header, for buckets already written: ``live``
    (and ``hot``: HAS version 2) are ``(curr, snap)`` names per level, the rest of the 11 levels empty;
    the header is ``gen``'s ledger ``checkpoint`` with the bucket-list hash they make.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint ledger.
    """
    if not is_checkpoint(checkpoint):
        raise ValueError(f"{checkpoint} is not a checkpoint ledger")
    levels = live + [(EMPTY, EMPTY)] * (LEVELS - len(live))
    has: dict[str, object] = {
        "version": 2 if hot else 1,
        "server": "cdp.testing",
        "currentLedger": checkpoint,
        "networkPassphrase": gen.passphrase,
        "currentBuckets": [{"curr": c, "next": {"state": 0}, "snap": s} for c, s in levels],
    }
    list_hash = bucket_list_hash(levels)
    if hot:
        hot_levels = hot + [(EMPTY, EMPTY)] * (LEVELS - len(hot))
        has["hotArchiveBuckets"] = [{"curr": c, "next": {"state": 0}, "snap": s} for c, s in hot_levels]
        list_hash = hashlib.sha256(list_hash + bucket_list_hash(hot_levels)).digest()
    text = json.dumps(has, indent=1)
    for key in (hex_path("history", checkpoint, ".json"), ".well-known/stellar-history.json"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(text)
    meta = gen.ledger_meta(checkpoint)
    body = meta.v2 or meta.v1 or meta.v0
    assert body is not None
    header = body.ledger_header
    header.header.bucket_list_hash = xdr.Hash(list_hash)
    path = root / header_key(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(marked([header.to_xdr_bytes()])))


def write_archive(root: Path, gen: SyntheticLedgers, checkpoint: int, first: int = 2) -> dict[str, int]:
    """An archive at ``root`` whose checkpoint ``checkpoint`` holds the state ledgers ``first..checkpoint``
    of ``gen`` leave; returns how many live and hot entries it holds.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint ledger.
    """
    if not is_checkpoint(checkpoint):
        raise ValueError(f"{checkpoint} is not a checkpoint ledger")
    live, hot = replay_state(gen.ledger(s) for s in range(first, checkpoint + 1))
    init, archived = INIT.to_bytes(4, "big"), (0).to_bytes(4, "big")  # INITENTRY, HOT_ARCHIVE_ARCHIVED
    live_levels = [(write_bucket(root, marked(init + e for e in live.values())), EMPTY)]
    hot_levels = [(write_bucket(root, marked(archived + e for e in hot.values())), EMPTY)] if hot else None
    write_checkpoint(root, gen, checkpoint, live_levels, hot_levels)
    return {"live": len(live), "hot": len(hot)}
