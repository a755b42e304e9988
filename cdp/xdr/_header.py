"""Read a ledger's sequence and close time straight from the XDR bytes, without decoding the rest.

The client checks every upstream message against its header and the pipeline needs close times
for latency metrics; a full decode costs ~1 s per pubnet ledger, this costs microseconds.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from cdp._errors import LedgerDecodeError

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


@attrs.frozen
class HeaderFacts:
    meta_version: int
    sequence: int
    close_time: int
    protocol: int


def peek_header(raw: bytes) -> HeaderFacts:
    """Sequence, close time and protocol of a raw ``LedgerCloseMeta``.

    Raises:
        LedgerDecodeError: naming the byte offset where the bytes stop looking like a header.
    """
    try:
        return _peek(memoryview(raw))
    except struct.error:
        raise LedgerDecodeError(f"truncated LedgerCloseMeta header ({len(raw)} bytes)") from None


def _peek(buf: memoryview) -> HeaderFacts:
    (version,) = _U32.unpack_from(buf, 0)
    off = 4
    if version not in (0, 1, 2):
        raise LedgerDecodeError(f"unknown LedgerCloseMeta version {version} at byte 0")
    if version in (1, 2):
        (ext,) = _U32.unpack_from(buf, off)
        off += 4
        if ext == 1:
            off += 4 + 8  # LedgerCloseMetaExtV1: ExtensionPoint + sorobanFeeWrite1KB
        elif ext != 0:
            raise LedgerDecodeError(f"unknown LedgerCloseMetaExt {ext} at byte 4")
    off += 32  # LedgerHeaderHistoryEntry.hash
    (protocol,) = _U32.unpack_from(buf, off)
    off += 4 + 32 + 32  # ledgerVersion, previousLedgerHash, scpValue.txSetHash
    (close_time,) = _U64.unpack_from(buf, off)
    off += 8
    (n_upgrades,) = _U32.unpack_from(buf, off)
    off += 4
    if n_upgrades > 6:
        raise LedgerDecodeError(f"{n_upgrades} upgrades at byte {off - 4}: the limit is 6")
    for _ in range(n_upgrades):
        (size,) = _U32.unpack_from(buf, off)
        if size > 128:
            raise LedgerDecodeError(f"upgrade of {size} bytes at byte {off}: the limit is 128")
        off += 4 + size + (-size % 4)
    (sv_ext,) = _U32.unpack_from(buf, off)
    off += 4
    if sv_ext == 1:  # STELLAR_VALUE_SIGNED: NodeID (type + 32) + Signature<64>
        off += 4 + 32
        (sig,) = _U32.unpack_from(buf, off)
        if sig > 64:
            raise LedgerDecodeError(f"signature of {sig} bytes at byte {off}: the limit is 64")
        off += 4 + sig + (-sig % 4)
    elif sv_ext != 0:
        raise LedgerDecodeError(f"unknown StellarValue ext {sv_ext} at byte {off - 4}")
    off += 32 + 32  # txSetResultHash, bucketListHash
    (sequence,) = _U32.unpack_from(buf, off)
    return HeaderFacts(version, sequence, close_time, protocol)
