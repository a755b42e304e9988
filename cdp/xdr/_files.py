"""Ledgers stored on disk: raw ``LedgerCloseMeta`` files and galexie ``*.xdr.zst`` batches.

Shared by ``cdp extract`` and the fake source, so both accept the same PATHs.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

import attrs
import zstandard

from cdp._errors import LedgerDecodeError

from . import _skip as sk
from ._header import peek_header

LEDGER_FILE_ENDINGS: Final = (".xdr", ".xdr.zst", ".xdr.zstd")  # raw ledgers, galexie batches (and pre-v23)


@attrs.frozen
class StoredLedger:
    sequence: int
    raw: bytes
    origin: str  # file name, plus the index inside a batch
    close_time: int | None = None


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus ``*.xdr``/``*.xdr.zst`` found in named directories."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith((".xdr", ".xdr.zst", ".xdr.zstd")))
            )
        else:
            out.append(p)
    return out


# Ledgers a batch file may hold, times MAX_LEDGER_BYTES, is what it may decompress to, but never more
# than this: a 98 KB zstd bomb used to grow the process to 2 GiB before it was refused.
BATCH_BYTES_CAP: Final = 256 * 1024 * 1024
_CHUNK: Final = 1024 * 1024


def decompress_bounded(source: bytes | BinaryIO, origin: str, max_ledger_bytes: int) -> bytes:
    """Stream-decompress a batch, refusing it as soon as it grows past what its header allows."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(source) if isinstance(source, bytes) else source)
    try:
        plain = bytearray(reader.read(8))
        if len(plain) < 8:
            raise LedgerDecodeError(f"{origin}: too short for a LedgerCloseMetaBatch ({len(plain)} bytes)")
        start, end = struct.unpack(">II", plain)
        if end < start:
            raise LedgerDecodeError(f"{origin}: batch header says ledgers {start}..{end}")
        limit = min(BATCH_BYTES_CAP, 12 + (end - start + 1) * max_ledger_bytes)
        while chunk := reader.read(_CHUNK):
            plain += chunk
            if len(plain) > limit:
                raise LedgerDecodeError(
                    f"{origin}: decompresses to more than {limit} bytes, the most {end - start + 1} ledgers of "
                    f"MAX_LEDGER_BYTES={max_ledger_bytes} may take"
                )
    except zstandard.ZstdError as exc:
        raise LedgerDecodeError(f"{origin}: not a zstd file: {exc}") from None
    return bytes(plain)


def split_batch(plain: bytes, origin: str) -> Iterator[StoredLedger]:
    """The ``LedgerCloseMeta`` byte ranges of a ``LedgerCloseMetaBatch``, found with the skippers: no decode.

    Raises:
        LedgerDecodeError: the bytes are not a batch, naming where the walk stopped.
    """
    try:
        w = sk.words(plain)
        count = w[2]
        o = 3
        for i in range(count):
            end = sk.s_LedgerCloseMeta(w, o)
            raw = plain[4 * o : 4 * end]
            facts = peek_header(raw)
            yield StoredLedger(facts.sequence, raw, f"{origin}[{i}]", facts.close_time)
            o = end
        if o != len(w):
            raise LedgerDecodeError(f"{origin}: {4 * (len(w) - o)} bytes after the last ledger")
    except (sk.SkipError, IndexError, ValueError, struct.error, RecursionError) as exc:
        raise LedgerDecodeError(f"{origin}: not a LedgerCloseMetaBatch: {type(exc).__name__}: {exc}") from None


def read_file(path: Path, max_ledger_bytes: int = 64 * 1024 * 1024) -> Iterator[StoredLedger]:
    """The ledgers in one file; a zstd batch (``.xdr.zst``/``.xdr.zstd``) yields each ``LedgerCloseMeta``.

    Raises:
        LedgerDecodeError: naming the file and, for a raw file, the byte offset of the failure.
        OSError: the file cannot be read.
    """
    if path.name.endswith((".zst", ".zstd")):
        with open(path, "rb") as f:
            plain = decompress_bounded(f, str(path), max_ledger_bytes)
        yield from split_batch(plain, str(path))
        return
    data = path.read_bytes()
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
