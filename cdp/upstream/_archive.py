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
import json
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


def _hex_path(kind: str, ledger: int, suffix: str) -> str:
    h = f"{ledger:08x}"
    return f"{kind}/{h[0:2]}/{h[2:4]}/{h[4:6]}/{kind}-{h}{suffix}"


def is_checkpoint(ledger: int) -> bool:
    return ledger > 0 and (ledger + 1) % 64 == 0


class Archive:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.fs, root, _ = open_fs(url, timeout_s, "--archive")
        self.root = root.rstrip("/")

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
        key = ".well-known/stellar-history.json" if ledger is None else _hex_path("history", ledger, ".json")
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

        key = _hex_path("ledger", ledger, ".xdr.gz")
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

    def bucket_records(self, name: str, hot: bool) -> Iterator[Record]:
        """The contract-data and TTL records of bucket ``name``, streamed (a bucket may be gigabytes);
        its sha256 is checked against its name at the end.

        Raises:
            ArchiveError: missing, not gzip, not bucket entries, or its hash is not its name.
        """
        key = f"bucket/{name[0:2]}/{name[2:4]}/{name[4:6]}/bucket-{name}.xdr.gz"
        origin = f"{self.url}/{key}"
        digest = hashlib.sha256()
        buf, base = b"", 0
        with self._open(key) as raw:
            try:
                with gzip.GzipFile(fileobj=raw) as plain:
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
