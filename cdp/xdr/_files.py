"""Ledgers stored on disk: raw ``LedgerCloseMeta`` files and galexie ``*.xdr.zst`` batches.

Shared by ``cdp extract`` and the fake source, so both accept the same PATHs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import zstandard
from stellar_sdk import xdr

from cdp._errors import LedgerDecodeError

from ._header import peek_header


@attrs.frozen
class StoredLedger:
    sequence: int
    raw: bytes
    origin: str  # file name, plus the index inside a batch


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus ``*.xdr``/``*.xdr.zst`` found in named directories."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith((".xdr", ".xdr.zst"))))
        else:
            out.append(p)
    return out


def read_file(path: Path, max_bytes: int = 1 << 31) -> Iterator[StoredLedger]:
    """The ledgers in one file; a zstd batch yields each of its ``LedgerCloseMeta``.

    Raises:
        LedgerDecodeError: naming the file and, for a raw file, the byte offset of the failure.
        OSError: the file cannot be read.
    """
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        try:
            plain = zstandard.ZstdDecompressor().stream_reader(data).read(max_bytes + 1)
        except zstandard.ZstdError as exc:
            raise LedgerDecodeError(f"{path}: not a zstd file: {exc}") from None
        if len(plain) > max_bytes:
            raise LedgerDecodeError(f"{path}: decompresses to more than {max_bytes} bytes")
        try:
            batch = xdr.LedgerCloseMetaBatch.from_xdr_bytes(plain)
        except Exception as exc:
            raise LedgerDecodeError(f"{path}: not a LedgerCloseMetaBatch: {exc}") from None
        for i, lcm in enumerate(batch.ledger_close_metas):
            raw = lcm.to_xdr_bytes()
            yield StoredLedger(peek_header(raw).sequence, raw, f"{path}[{i}]")
        return
    try:
        seq = peek_header(data).sequence
    except LedgerDecodeError as exc:
        raise LedgerDecodeError(f"{path}: {exc}") from None
    yield StoredLedger(seq, data, str(path))


def load_ledgers(paths: Iterable[Path]) -> dict[int, StoredLedger]:
    """Every ledger under ``paths`` by sequence (for the fake source; the last file wins a tie)."""
    found: dict[int, StoredLedger] = {}
    for f in expand_paths(paths):
        for ledger in read_file(f):
            found[ledger.sequence] = ledger
    return found
