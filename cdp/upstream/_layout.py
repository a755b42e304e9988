"""The galexie datastore layout (SEP-54): object keys, the ``.config.json`` manifest, and writing a store.

``../shared/docs/datastore-layout.md`` has the rules; the worked examples there are the tests.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import zstandard

from cdp._errors import CdpError, ConfigError, one_line
from cdp._validators import network_name
from cdp.extract import Ledger

from ._fs import open_fs

MANIFEST: Final = ".config.json"
T = TypeVar("T")
_M: Final = 0xFFFFFFFF


@attrs.frozen
class Layout:
    """How ledgers are grouped: ``ledgers_per_file`` per object, ``files_per_partition`` per folder."""

    ledgers_per_file: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    files_per_partition: int = attrs.field(default=64000, validator=attrs.validators.ge(1))

    def file_range(self, sequence: int) -> tuple[int, int]:
        """The first and last ledger of the file that holds ``sequence``."""
        first = (sequence // self.ledgers_per_file) * self.ledgers_per_file
        return first, first + self.ledgers_per_file - 1

    def key(self, sequence: int, suffix: str = ".xdr.zst") -> str:
        """The object key of the file holding ``sequence``, relative to the store's root."""
        first, last = self.file_range(sequence)
        name = f"{_M - first:08X}--{first}" + (f"-{last}" if self.ledgers_per_file > 1 else "") + suffix
        if self.files_per_partition == 1:
            return name
        span = self.ledgers_per_file * self.files_per_partition
        start = (sequence // span) * span
        return f"{_M - start:08X}--{start}-{start + span - 1}/{name}"


@attrs.frozen
class Manifest:
    network_passphrase: str
    layout: Layout
    version: str = "1.0"
    compression: str = "zstd"

    def to_json(self) -> dict[str, Any]:
        return {
            "networkPassphrase": self.network_passphrase,
            "version": self.version,
            "compression": self.compression,
            "ledgersPerBatch": self.layout.ledgers_per_file,
            "batchesPerPartition": self.layout.files_per_partition,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        """Raises ConfigError naming ``where`` and the field that is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: not a datastore manifest (expected a JSON object)")
        try:
            passphrase, per_file, per_partition = (
                data["networkPassphrase"], data["ledgersPerBatch"], data["batchesPerPartition"]
            )  # fmt: skip
        except KeyError as exc:
            raise ConfigError(f"{where}: manifest has no {exc.args[0]!r}") from None
        for name, value in (("ledgersPerBatch", per_file), ("batchesPerPartition", per_partition)):
            if type(value) is not int or value < 1:
                raise ConfigError(f"{where}: manifest {name}={value!r}: must be a whole number >= 1")
        if data.get("compression", "zstd") != "zstd":
            raise ConfigError(f"{where}: manifest compression={data['compression']!r}: only zstd is supported")
        return cls(str(passphrase), Layout(per_file, per_partition), str(data.get("version", "1.0")))

    def check(self, passphrase: str | None, layout: Layout | None, where: str) -> None:
        """The store must be of the configured network (if any), and of the layout the user gave (if any)."""
        if passphrase is not None and self.network_passphrase != passphrase:
            raise ConfigError(
                f"{where}: the store is for {network_name(self.network_passphrase)}, "
                f"not NETWORK_PASSPHRASE={network_name(passphrase)}"
            )
        if layout is not None and layout != self.layout:
            raise ConfigError(
                f"{where}: the manifest says {self.layout.ledgers_per_file} ledgers per file and "
                f"{self.layout.files_per_partition} files per partition, the settings say "
                f"{layout.ledgers_per_file} and {layout.files_per_partition}"
            )


def batch_bytes(ledgers: list[Ledger]) -> bytes:
    """The zstd ``LedgerCloseMetaBatch`` of consecutive ledgers, from their raw XDR (no re-encoding)."""
    plain = struct.pack(">III", ledgers[0].sequence, ledgers[-1].sequence, len(ledgers))
    return zstandard.ZstdCompressor().compress(plain + b"".join(ledger.raw for ledger in ledgers))


class StoreWriteError(CdpError):
    """A store could not be written (unreachable, denied, a URL whose filesystem cannot write)."""


def write_store(root: Path | str, manifest: Manifest, ledgers: Iterable[Ledger], timeout_s: float = 30.0) -> int:
    """Write ``ledgers`` (ascending, consecutive) into the store at ``root`` (a path or any fsspec URL);
    returns files written.

    Each file appears whole, as galexie's uploads do: an object store's put is atomic, a local file is
    written to a temporary name and renamed. An existing store's manifest must agree with ``manifest``.

    Raises:
        StoreWriteError: the store cannot be read or written, naming the URL and the object.
        ConfigError: the store is another network's or layout's, or the ledgers are not consecutive.
    """
    url = str(root)
    fs, base, local = open_fs(url, timeout_s, "store")
    base = base.rstrip("/")

    def io(what: str, key: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except CdpError:
            raise
        except Exception as exc:  # any transport's or backend's failure, said in one line
            raise StoreWriteError(f"cannot {what} {url.rstrip('/')}/{key}: {one_line(exc)}") from None

    def put(key: str, data: bytes) -> None:
        path = f"{base}/{key}"
        if not local:
            fs.pipe_file(path, data)
            return
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with open(path + ".tmp", "wb") as out:
            out.write(data)
        os.replace(path + ".tmp", path)

    def existing() -> bytes | None:
        try:
            data: bytes = fs.cat_file(f"{base}/{MANIFEST}")
        except FileNotFoundError:
            return None
        return data

    raw = io("read", MANIFEST, existing)
    if raw is None:
        io("write", MANIFEST, lambda: put(MANIFEST, (json.dumps(manifest.to_json(), indent=1) + "\n").encode()))
    else:
        where = f"{url.rstrip('/')}/{MANIFEST}"
        try:
            found = Manifest.from_json(json.loads(raw), where)
        except ValueError as exc:
            raise ConfigError(f"{where} is not JSON: {exc}") from None
        found.check(manifest.network_passphrase, manifest.layout, url)
    layout, files, pending = manifest.layout, 0, list[Ledger]()

    def flush() -> None:
        key = layout.key(pending[0].sequence)
        io("write", key, lambda: put(key, batch_bytes(pending)))

    for ledger in ledgers:
        if pending and layout.file_range(ledger.sequence) != layout.file_range(pending[0].sequence):
            flush()
            files, pending = files + 1, []
        if pending and ledger.sequence != pending[-1].sequence + 1:
            raise ConfigError(
                f"ledgers {pending[-1].sequence} and {ledger.sequence} would share a file but are not consecutive"
            )
        pending.append(ledger)
    if pending:
        flush()
        files += 1
    return files
