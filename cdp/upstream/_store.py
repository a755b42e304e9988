"""An opened galexie datastore (SEP-54): its manifest and layout, reading and splitting its files.

Shared by the service's reader (``DatastoreSource``) and the batch tasks' (``read_range``), so both
refuse the same objects with the same words.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from typing import Final

from cdp._errors import ConfigError, LedgerDecodeError, UpstreamError, one_line
from cdp._validators import AUTO, network_name
from cdp.extract import Ledger
from cdp.extract._network import NetworkCheck
from cdp.xdr._files import BATCH_BYTES_CAP, decompress_bounded, split_batch

from ._fs import denied, open_fs
from ._layout import MANIFEST, Layout, Manifest

EAGER_SPLIT_LEDGERS: Final = 8  # files of at most this many ledgers are split by the thread fetching them
SUFFIXES: Final = (".xdr.zst", ".xdr.zstd")  # galexie >= v23, and the exports made before it


class StoreUnreachable(UpstreamError):
    """The store did not answer (a network, DNS or server error): retrying may fix it."""


class ObjectRefused(LedgerDecodeError):
    """A store object too large or not a regular file: each ledger it should hold is a bad ledger."""


class Datastore:
    """An opened store: its filesystem, root and layout (from the manifest, checked against the config).

    ``passphrase=None`` (or ``auto``) accepts the manifest's network, whatever it is; ``network`` is the
    manifest's (None without one), which its ledgers are then checked against.
    """

    def __init__(self, url: str, passphrase: str | None, layout: Layout | None, timeout_s: float = 30.0) -> None:
        self.fs, self.root, self.local = open_fs(url, timeout_s, "DATASTORE_URL")
        self.url = url
        self.network: str | None = None
        try:
            raw = self.read(MANIFEST)
        except Exception as exc:  # denied: retrying will not help; any other transport's failure may pass
            error = UpstreamError if denied(exc) else StoreUnreachable
            raise error(f"DATASTORE_URL={url}: cannot read {MANIFEST}: {one_line(exc)}") from None
        if raw is None:
            if layout is None and not self._exists():
                raise ConfigError(f"DATASTORE_URL={url}: there is no store there (no {MANIFEST}, no objects)")
            if layout is None:
                raise ConfigError(
                    f"DATASTORE_URL={url}: no {MANIFEST}; give the layout with --datastore-ledgers-per-file "
                    "and --datastore-files-per-partition"
                )
            self.layout = layout
            return
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"DATASTORE_URL={url}: {MANIFEST} is not JSON: {exc}") from None
        manifest = Manifest.from_json(data, f"{url}/{MANIFEST}")
        manifest.check(None if passphrase == AUTO else passphrase, layout, f"DATASTORE_URL={url}")
        self.layout = manifest.layout
        self.network = manifest.network_passphrase

    def _exists(self) -> bool:
        """Whether anything is at the root (a bucket or directory); a failure to tell counts as yes."""
        try:
            return bool(self.fs.exists(self.root))
        except Exception:  # the question is only for a clearer message
            return True

    def network_check(self, passphrase: str, claim: str = "") -> NetworkCheck:
        """What its ledgers are checked against: ``passphrase``, or under ``auto`` the manifest's network
        (a store whose ledgers contradict its own manifest is refused, naming both)."""
        if passphrase == AUTO and self.network is not None:
            manifest = f"the network {network_name(self.network)} of {self.url.rstrip('/')}/{MANIFEST}"
            return NetworkCheck(self.network, claim=manifest)
        return NetworkCheck(passphrase, claim=claim)

    def read(self, key: str, limit: int | None = None) -> bytes | None:
        """The object's bytes, or None when there is no such object (blocking).

        Raises:
            ObjectRefused: with a ``limit``, the object is larger (never read past it), or, in a local
                store, not a regular file (a FIFO would block for ever, a device never end).
        """
        path = f"{self.root.rstrip('/')}/{key}"
        data: bytes
        try:
            if limit is None:
                data = self.fs.cat_file(path)
                return data
            if self.local:
                return _read_local(path, limit, f"{self.url}/{key}")
            data = self.fs.cat_file(path, start=0, end=limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise ObjectRefused(f"{self.url}/{key}: over the {limit} bytes a file may hold")
        return data

    def file_limit(self, max_ledger_bytes: int) -> int:
        """The most a file of the store may take, compressed: what its ledgers may decompress to (zstd
        never grows data by more than a little)."""
        plain = min(BATCH_BYTES_CAP, 12 + self.layout.ledgers_per_file * max_ledger_bytes)
        return plain + plain // 64 + 65536

    def fetch_file(self, first: int, limit: int) -> tuple[str, bytes | None]:
        """The file holding ledger ``first`` under either suffix: its key and bytes (None if absent), at
        most ``limit`` bytes (``ObjectRefused`` past it)."""
        keys = [self.layout.key(first, suffix) for suffix in SUFFIXES]
        for key in keys:
            data = self.read(key, limit)
            if data is not None:
                return key, data
        return keys[0], None

    def file_ledgers(self, first: int, key: str, data: bytes, max_ledger_bytes: int) -> list[Ledger]:
        """``ledgers``; a corrupt file becomes one refused ledger per sequence it should hold."""
        try:
            return self.ledgers(key, data, max_ledger_bytes)
        except LedgerDecodeError as exc:
            return self.refused(first, exc)

    def hole(self, key: str) -> UpstreamError:
        """The error for a file of a bounded range that is not there."""
        return UpstreamError(f"datastore {self.url}: {key} is missing (a hole in the range)")

    def refused(self, first: int, exc: LedgerDecodeError) -> list[Ledger]:
        """A bad ledger for each sequence the file holding ``first`` should hold."""
        lo, hi = self.layout.file_range(first)
        return [Ledger(s, None, b"", problem=str(exc)) for s in range(lo, hi + 1)]

    def ledgers(self, key: str, data: bytes, max_ledger_bytes: int) -> list[Ledger]:
        """The ledgers of a fetched file, split without decoding.

        Raises:
            LedgerDecodeError: the file is not a zstd ``LedgerCloseMetaBatch`` (naming its URL).
        """
        origin = f"{self.url}/{key}"
        plain = decompress_bounded(data, origin, max_ledger_bytes)
        return [Ledger(s.sequence, s.close_time, s.raw) for s in split_batch(plain, origin)]


def _read_local(path: str, limit: int, name: str) -> bytes:
    """A local file of at most ``limit`` bytes, read without fsspec (its layers cost more than the read).

    Raises:
        FileNotFoundError: there is no such file.
        ObjectRefused: larger than ``limit``, or not a regular file (a FIFO would block for ever, a
            device never end): checked before it is opened.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ObjectRefused(f"{name}: not a regular file ({'directory' if stat.S_ISDIR(st.st_mode) else 'other'})")
    if st.st_size > limit:
        raise ObjectRefused(f"{name}: {st.st_size} bytes, over the {limit} a file may hold")
    with open(path, "rb") as f:
        data = f.read(st.st_size + 1)  # its size, not the limit: read(n) allocates n bytes first (64 MiB)
        if len(data) > st.st_size:  # grew since the stat
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise ObjectRefused(f"{name}: over the {limit} bytes a file may hold")
    return data


def in_sequence(ledgers: list[Ledger], expected: int, file_last: int, where: str) -> Iterator[Ledger]:
    """A file's ledgers from ``expected`` on, each the next in sequence; the list lets go of each as
    it is handed on. The caller stops taking them at the end of its range.

    Raises:
        UpstreamError: the file does not hold the consecutive ledgers its name promises.
    """
    ledgers.reverse()
    while ledgers:
        ledger = ledgers.pop()
        if ledger.sequence < expected:
            continue
        if ledger.sequence > expected:
            raise UpstreamError(f"{where} skips from ledger {expected} to {ledger.sequence}")
        yield ledger
        expected += 1
    if expected <= file_last:
        raise UpstreamError(f"{where} ends at ledger {expected - 1}, its name says it holds up to {file_last}")


def default_prefetch(ledgers_per_file: int) -> int:
    """Files to fetch ahead: about 100 ledgers (as the Go reader; 2 files of 64), or 32 where files are
    split as they are fetched (held decompressed: ~32 MB of pubnet ledgers)."""
    if ledgers_per_file <= EAGER_SPLIT_LEDGERS:
        return max(2, math.ceil(32 / ledgers_per_file))
    return max(2, math.ceil(100 / ledgers_per_file))
