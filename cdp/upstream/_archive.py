"""A Stellar history archive (a path, ``file://``, ``s3://``, ``gs://``, ``https://``): a checkpoint's
History Archive State, its ledger header, and its buckets streamed and checked against their names.

Layout (stable since 2015): ``history/ab/cd/ef/history-XXXXXXXX.json`` (the checkpoint ledger in hex,
its first three bytes as folders), ``.well-known/stellar-history.json`` (the latest), the headers in
``ledger/ab/cd/ef/ledger-XXXXXXXX.xdr.gz``, and ``bucket/h0/h1/h2/bucket-<sha256>.xdr.gz`` named by the
sha256 of their decompressed bytes. A checkpoint ledger is one where ``(ledger + 1) % 64 == 0``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import queue
import threading
import zlib
from collections.abc import Iterator
from typing import Any, Final

import attrs

from cdp._errors import CdpError, ConfigError, LedgerDecodeError, one_line
from cdp.xdr._buckets import EMPTY, Record, complete_prefix, records, state_records

from ._fs import denied, open_fs

CHUNK: Final = 1 << 20


class ArchiveError(CdpError):
    """The archive could not be read, or holds something that does not check out; names the file."""


@attrs.frozen
class CheckpointState:
    """A checkpoint's History Archive State: its ledger, network and bucket lists (newest level first)."""

    ledger: int
    network: str | None
    live: tuple[tuple[str, str], ...]  # (curr, snap) per level
    hot: tuple[tuple[str, str], ...]  # HAS version 2: the hot archive's; else empty

    @property
    def buckets(self) -> list[tuple[str, bool]]:
        """Every non-empty bucket, newest first (level 0 curr, level 0 snap, level 1 ...), then the hot
        archive's the same way; with whether it is a hot-archive bucket."""
        out = [(name, False) for level in self.live for name in level if name != EMPTY]
        return out + [(name, True) for level in self.hot for name in level if name != EMPTY]


@attrs.frozen
class Header:
    ledger: int
    close_time: int
    protocol: int
    bucket_list_hash: bytes


def hex_path(kind: str, ledger: int, suffix: str) -> str:
    h = f"{ledger:08x}"
    return f"{kind}/{h[0:2]}/{h[2:4]}/{h[4:6]}/{kind}-{h}{suffix}"


def header_key(ledger: int) -> str:
    """The file holding checkpoint ``ledger``'s headers."""
    return hex_path("ledger", ledger, ".xdr.gz")


def bucket_key(name: str) -> str:
    return f"bucket/{name[0:2]}/{name[2:4]}/{name[4:6]}/bucket-{name}.xdr.gz"


AHEAD: Final = 16  # chunks (of CHUNK bytes) a download may run ahead of the reading


class ReadAhead:
    """A file read by a thread into a bounded queue: its download overlaps the reading (of this bucket
    and, started early, the next one), holding at most ``AHEAD`` chunks. A file-like object with
    ``read`` only; a failure of the download is raised by ``read``."""

    def __init__(self, file: Any, origin: str) -> None:
        self._file, self._origin = file, origin
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(AHEAD)
        self._stop = threading.Event()
        self._buf, self._done = b"", False
        self._thread = threading.Thread(target=self._fill, name="cdp-archive-read", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._file.read(CHUNK)
                self._put(chunk)
                if not chunk:
                    return
        except Exception as exc:  # any transport's: raised to the reader, naming the file
            self._put(ArchiveError(f"{self._origin} cannot be read: {one_line(exc)}"))

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buf) < size):
            item = self._chunks.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._done = True
            self._buf += item
        cut = len(self._buf) if size < 0 else size
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out

    def seek(self, offset: int, /) -> object:
        raise io.UnsupportedOperation("a bucket is read once, in order")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._file.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_checkpoint(ledger: int) -> bool:
    return ledger > 0 and (ledger + 1) % 64 == 0


class Archive:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.fs, root, _ = open_fs(url, timeout_s, "--archive")
        self.root = root.rstrip("/")
        self._ahead: dict[str, ReadAhead] = {}

    def _open(self, key: str) -> Any:
        try:
            return self.fs.open(f"{self.root}/{key}", "rb")
        except FileNotFoundError:
            raise ArchiveError(f"{self.url}/{key} is not in the archive") from None
        except Exception as exc:
            kind = "denied" if denied(exc) else "cannot be read"
            raise ArchiveError(f"{self.url}/{key} {kind}: {one_line(exc)}") from None

    def _read(self, key: str) -> bytes:
        with self._open(key) as f:
            try:
                data: bytes = f.read()
            except Exception as exc:
                raise ArchiveError(f"{self.url}/{key} cannot be read: {one_line(exc)}") from None
        return data

    def state(self, ledger: int | None = None) -> CheckpointState:
        """The HAS of checkpoint ``ledger`` (default: the latest).

        Raises:
            ConfigError: ``ledger`` is not a checkpoint ledger.
            ArchiveError: no such checkpoint, or its HAS is not one.
        """
        if ledger is not None and not is_checkpoint(ledger):
            below = (ledger + 1) // 64 * 64 - 1
            raise ConfigError(f"--ledger={ledger}: not a checkpoint ledger (one where (ledger + 1) % 64 == 0, "
                              f"e.g. {max(below, 63)})")  # fmt: skip
        key = ".well-known/stellar-history.json" if ledger is None else hex_path("history", ledger, ".json")
        try:
            has = json.loads(self._read(key))
            live = tuple((b["curr"], b["snap"]) for b in has["currentBuckets"])
            hot = tuple((b["curr"], b["snap"]) for b in has.get("hotArchiveBuckets", ()))
            state = CheckpointState(int(has["currentLedger"]), has.get("networkPassphrase"), live, hot)
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{self.url}/{key}: not a History Archive State ({one_line(exc)})") from None
        if ledger is not None and state.ledger != ledger:
            raise ArchiveError(f"{self.url}/{key}: says currentLedger {state.ledger}, not {ledger}")
        return state

    def header(self, ledger: int) -> Header:
        """The header of checkpoint ``ledger``, from its checkpoint's ledger file.

        Raises:
            ArchiveError: the file is missing, not headers, or has no header of ``ledger``.
        """
        from stellar_sdk import xdr

        key = header_key(ledger)
        try:
            data = gzip.decompress(self._read(key))
            for s, e in records(data, f"{self.url}/{key}"):
                h = xdr.LedgerHeaderHistoryEntry.from_xdr_bytes(data[s:e]).header
                if h.ledger_seq.uint32 == ledger:
                    close = h.scp_value.close_time.time_point.uint64
                    return Header(ledger, close, h.ledger_version.uint32, h.bucket_list_hash.hash)
        except (OSError, EOFError, zlib.error, ValueError, LedgerDecodeError) as exc:
            raise ArchiveError(f"{self.url}/{key}: not ledger headers ({one_line(exc)})") from None
        raise ArchiveError(f"{self.url}/{key}: has no header of ledger {ledger}")

    def size(self, name: str) -> int:
        """Bucket ``name``'s compressed size (0 where the store does not say)."""
        try:
            return int(self.fs.size(f"{self.root}/{bucket_key(name)}") or 0)
        except Exception:  # only for a progress bar: its fetch says what is wrong
            return 0

    def fetch_ahead(self, name: str) -> None:
        """Start downloading bucket ``name`` now (a thread reads it ahead, at most ``AHEAD`` bytes), for
        ``bucket_records`` to take over: the next bucket arrives while this one is read."""
        if name not in self._ahead:
            self._ahead[name] = ReadAhead(self._open(bucket_key(name)), f"{self.url}/{bucket_key(name)}")

    def close(self) -> None:
        for pending in self._ahead.values():
            pending.close()
        self._ahead.clear()

    def bucket_records(self, name: str, hot: bool) -> Iterator[Record]:
        """The contract-data and TTL records of bucket ``name``, streamed (a bucket may be gigabytes);
        its sha256 is checked against its name at the end.

        Raises:
            ArchiveError: missing, not gzip, not bucket entries, or its hash is not its name.
        """
        key = bucket_key(name)
        origin = f"{self.url}/{key}"
        digest = hashlib.sha256()
        buf, base = b"", 0
        with self._ahead.pop(name, None) or ReadAhead(self._open(key), origin) as raw:
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as plain:
                    while chunk := plain.read(CHUNK):
                        digest.update(chunk)
                        buf += chunk
                        cut = complete_prefix(buf)
                        yield from state_records(buf[:cut], origin, hot, base)
                        buf, base = buf[cut:], base + cut
            except (OSError, EOFError, zlib.error) as exc:
                raise ArchiveError(f"{origin}: not a gzip bucket ({one_line(exc)})") from None
            except LedgerDecodeError as exc:
                raise ArchiveError(str(exc)) from None
        if buf:
            raise ArchiveError(f"{origin}: ends inside a record (byte {base})")
        if digest.hexdigest() != name:
            raise ArchiveError(f"{origin}: its content hashes to {digest.hexdigest()}, not its name")
