"""History-archive buckets, read as bytes: their records, the entries a contract-data state needs, and
the bucket-list hash a checkpoint's header commits to.

A bucket is a stream of record-marked (RFC 5531: a 4-byte big-endian length, top bit set) XDR
``BucketEntry`` records (``HotArchiveBucketEntry`` in a hot-archive bucket). Nothing here decodes an
entry: the union tags and the key bytes are read where they lie, so a bucket of millions of entries
costs a pass over its bytes plus the contract-data and TTL entries taken out of it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from cdp._errors import LedgerDecodeError

_U32: Final = struct.Struct(">I").unpack_from
_I32: Final = struct.Struct(">i").unpack_from

CONTRACT_DATA: Final = 6
TTL: Final = 9
# BucketEntryType
LIVE, DEAD, INIT, META = 0, 1, 2, -1
# HotArchiveBucketEntryType
HOT_ARCHIVED, HOT_LIVE, HOT_META = 0, 1, -1
EMPTY: Final = "0" * 64  # an empty bucket's name in a HAS


class Record(NamedTuple):
    """A bucket record that matters to contract-data state.

    ``kind``: ``"data"`` or ``"ttl"``; ``entry``: the ``LedgerEntry`` bytes (None: the key is dead,
    or, in a hot archive, live again); ``key``: a TTL's ``keyHash`` (the hash of the contract-data
    key it belongs to), a dead contract-data key's ``LedgerKey`` bytes, or empty for a live
    contract-data entry (its key is found by walking the entry).
    """

    kind: str
    entry: bytes | None
    key: bytes


def records(data: bytes, origin: str, base: int = 0) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` of each record of a bucket (``data`` starting at byte ``base`` of it).

    Raises:
        LedgerDecodeError: a record mark that is not one, or runs past the end, naming ``origin`` and the byte.
    """
    o, n = 0, len(data)
    while o < n:
        if o + 4 > n:
            raise LedgerDecodeError(f"{origin}: a record mark cut short at byte {base + o}")
        mark = _U32(data, o)[0]
        size = mark & 0x7FFFFFFF
        if not mark & 0x80000000 or o + 4 + size > n or size < 4:
            raise LedgerDecodeError(f"{origin}: not a record of bucket entries at byte {base + o}")
        yield o + 4, o + 4 + size
        o += 4 + size


def complete_prefix(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole records (the rest waits for the next chunk)."""
    o, n = 0, len(data)
    while o + 4 <= n:
        size = _U32(data, o)[0] & 0x7FFFFFFF
        if o + 4 + size > n:
            break
        o += 4 + size
    return o


def state_records(data: bytes, origin: str, hot: bool = False, base: int = 0) -> Iterator[Record]:
    """The contract-data and TTL records of a live bucket (``hot``: a hot-archive bucket), in order.

    Live bucket: ``LIVEENTRY``/``INITENTRY`` carry a ``LedgerEntry`` (last-modified ledger, then its
    type), ``DEADENTRY`` a ``LedgerKey``. Hot archive: ``HOT_ARCHIVE_ARCHIVED`` carries the archived
    ``LedgerEntry``, ``HOT_ARCHIVE_LIVE`` the key of an entry restored since (older copies are void).

    Raises:
        LedgerDecodeError: a record whose tag is none of those, naming ``origin`` and the byte.
    """
    live, dead, meta = (HOT_ARCHIVED, HOT_LIVE, HOT_META) if hot else (LIVE, DEAD, META)
    for s, e in records(data, origin, base):
        tag = _I32(data, s)[0]
        if tag == meta:
            continue
        if tag == live or (not hot and tag == INIT):
            etype = _I32(data, s + 8)[0] if e - s >= 12 else -1
            if etype == CONTRACT_DATA:
                yield Record("data", data[s + 4 : e], b"")
            elif etype == TTL:
                yield Record("ttl", data[s + 4 : e], data[s + 12 : s + 44])  # lastModified, type, keyHash
        elif tag == dead:
            ktype = _I32(data, s + 4)[0] if e - s >= 8 else -1
            if ktype == CONTRACT_DATA:
                yield Record("data", None, data[s + 4 : e])
            elif ktype == TTL:
                yield Record("ttl", None, data[s + 8 : s + 40])
        else:
            raise LedgerDecodeError(f"{origin}: unknown bucket entry type {tag} at byte {base + s - 4}")


def bucket_list_hash(levels: Sequence[tuple[str, str]]) -> bytes:
    """The hash a ledger header commits to for a bucket list given as ``(curr, snap)`` hex names per
    level: ``sha256`` of the levels' ``sha256(curr || snap)``."""
    level_hashes = (hashlib.sha256(bytes.fromhex(curr) + bytes.fromhex(snap)).digest() for curr, snap in levels)
    return hashlib.sha256(b"".join(level_hashes)).digest()
