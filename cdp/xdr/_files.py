"""Ledgers stored on disk: raw ``LedgerCloseMeta`` files and galexie ``*.xdr.zst`` batches.

Shared by ``cdp extract`` and the fake source, so both accept the same PATHs.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import attrs
import zstandard

from cdp._errors import LedgerDecodeError

from . import _skip as sk
from ._header import peek_header
from ._walker import skippers as ws

_COUNT: Final = struct.Struct(">i")  # the batch's ledger count, after its start and end sequences
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


def decompress_bounded(data: bytes, origin: str, max_ledger_bytes: int) -> bytes | bytearray:
    """Decompress a batch, refusing it before it grows past what its header allows.

    A frame that declares its size (as galexie's do) is decompressed in one exact allocation; any
    other is streamed into a growing buffer, returned as it is (a copy would double a 64 MB batch).

    Raises:
        LedgerDecodeError: not zstd, a frame cut short, or more bytes than its ledgers may take.
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        declared = -1  # not a zstd frame: the stream reader below says so in its words
    if 8 <= declared <= 12 + max_ledger_bytes:  # within what even a one-ledger header allows: no peek
        return _whole_frame(data, origin, declared)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    try:
        plain = bytearray(reader.read(8))
        declared = zstandard.frame_content_size(data)
        if len(plain) < 8:
            if declared >= 8 or _cut_short(data):  # the stream reader says nothing of a truncated frame
                raise LedgerDecodeError(f"{origin}: not a zstd file: the frame is cut short")
            raise LedgerDecodeError(f"{origin}: too short for a LedgerCloseMetaBatch ({len(plain)} bytes)")
        start, end = struct.unpack(">II", plain)
        if end < start:
            raise LedgerDecodeError(f"{origin}: batch header says ledgers {start}..{end}")
        limit = min(BATCH_BYTES_CAP, 12 + (end - start + 1) * max_ledger_bytes)
        too_big = LedgerDecodeError(
            f"{origin}: decompresses to more than {limit} bytes, the most {end - start + 1} ledgers of "
            f"MAX_LEDGER_BYTES={max_ledger_bytes} may take"
        )
        if declared > limit:
            raise too_big
        _refuse_trailing_bytes(data, origin)
        if declared >= 0:
            return _DECOMPRESSORS.get().decompress(data, max_output_size=declared)
        while chunk := reader.read(_CHUNK):
            plain += chunk
            if len(plain) > limit:
                raise too_big
        if _cut_short(data):  # bounded now: its output is the ``plain`` just read
            raise LedgerDecodeError(f"{origin}: not a zstd file: the frame is cut short")
    except zstandard.ZstdError as exc:
        raise LedgerDecodeError(f"{origin}: not a zstd file: {exc}") from None
    return plain


def _whole_frame(data: bytes, origin: str, declared: int) -> bytes:
    """A frame declaring a size no batch header could refuse, decompressed in one exact allocation.

    Raises:
        LedgerDecodeError: as ``decompress_bounded``.
    """
    _refuse_trailing_bytes(data, origin)
    try:
        plain = _DECOMPRESSORS.get().decompress(data, max_output_size=declared)
    except zstandard.ZstdError as exc:
        raise LedgerDecodeError(f"{origin}: not a zstd file: {exc}") from None
    start, end = struct.unpack_from(">II", plain)
    if end < start:
        raise LedgerDecodeError(f"{origin}: batch header says ledgers {start}..{end}")
    return plain


class _PerThread(threading.local):
    """One decompressor per thread (not thread-safe; ~20 us to make one per file)."""

    def __init__(self) -> None:
        self.decompressor = zstandard.ZstdDecompressor()

    def get(self) -> zstandard.ZstdDecompressor:
        return self.decompressor


_DECOMPRESSORS: Final = _PerThread()


def _refuse_trailing_bytes(data: bytes, origin: str) -> None:
    """A batch is one zstd frame: bytes after it (an object extended or overwritten in place) are
    corruption, not something to ignore. The frame's end is found by stepping over its block headers
    (3 bytes each: last-block flag, type, size), never by decompressing."""
    o = zstandard.frame_header_size(data)
    while True:
        if o + 3 > len(data):
            return  # cut short: the decompression says so, in its own words
        header = int.from_bytes(data[o : o + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        o += 3 + (1 if kind == 1 else size)  # an RLE block holds one byte, whatever it regenerates to
        if header & 1:
            break
    if zstandard.get_frame_parameters(data).has_checksum:
        o += 4
    if o < len(data):
        raise LedgerDecodeError(f"{origin}: {len(data) - o} bytes after the zstd frame (it ends at byte {o})")


def _cut_short(data: bytes) -> bool:
    """True if the first frame ends before its end marker (call only once its output is known bounded)."""
    stream = zstandard.ZstdDecompressor().decompressobj()
    stream.decompress(data)
    return not stream.eof


def split_batch(plain: bytes | bytearray, origin: str) -> Iterator[StoredLedger]:
    """The ``LedgerCloseMeta`` byte ranges of a ``LedgerCloseMetaBatch``, found with the skippers: no decode.

    The last ledger runs to the end of the batch without a walk (a one-ledger file costs no walk at
    all): its extraction walks it anyway, and refuses it, alone, if it is not one whole ledger.

    Raises:
        LedgerDecodeError: the bytes are not a batch, naming where the walk stopped.
    """
    try:
        if len(plain) % 4:
            raise sk.SkipError("XDR length not a multiple of 4", len(plain))
        count, size = _COUNT.unpack_from(plain, 8)[0], len(plain) // 4
        bounds = [3]
        if count > 1:  # one ledger (SDF's layout) needs no words: it runs to the end
            w = sk.words(plain)
            for _ in range(count - 1):
                bounds.append(ws.s_LedgerCloseMeta(w, bounds[-1]))
            del w  # as large as the batch: gone before the ledgers are copied out
        bounds.append(size if count > 0 else 3)
        view = memoryview(plain)
        for i in range(count):
            raw = view[4 * bounds[i] : 4 * bounds[i + 1]].tobytes()
            facts = peek_header(raw)
            yield StoredLedger(facts.sequence, raw, f"{origin}[{i}]", facts.close_time)
        if bounds[-1] != size:  # only a batch of no ledgers gets here with bytes left
            raise LedgerDecodeError(f"{origin}: {4 * (size - bounds[-1])} bytes after the last ledger")
    except (sk.SkipError, IndexError, ValueError, struct.error, RecursionError) as exc:
        raise LedgerDecodeError(f"{origin}: not a LedgerCloseMetaBatch: {type(exc).__name__}: {exc}") from None


def read_file(path: Path, max_ledger_bytes: int = 64 * 1024 * 1024) -> Iterator[StoredLedger]:
    """The ledgers in one file; a zstd batch (``.xdr.zst``/``.xdr.zstd``) yields each ``LedgerCloseMeta``.

    Raises:
        LedgerDecodeError: naming the file and, for a raw file, the byte offset of the failure.
        OSError: the file cannot be read.
    """
    if path.name.endswith((".zst", ".zstd")):
        plain = decompress_bounded(path.read_bytes(), str(path), max_ledger_bytes)
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
