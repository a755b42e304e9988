"""The resume point: the last committed ledger and the output offset right after its rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

from cdp._errors import CdpError, ConfigError


@attrs.frozen
class Checkpoint:
    ledger: int
    output_offset: int | None = None  # None for outputs that cannot be truncated (stdout, callbacks)
    network: str | None = None  # the passphrase the committed ledgers were verified under (None: before any)


def _whole(value: object) -> bool:
    """A non-negative integer, and not a bool (``True`` is an int to Python, not a ledger)."""
    return type(value) is int and value >= 0


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The stored checkpoint, or None when there is none yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CdpError(f"CHECKPOINT_PATH={path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"CHECKPOINT_PATH={path}: is not JSON: {exc}") from None
    try:
        ledger = data["ledger"]
        offset = data.get("output_offset")
        network = data.get("network")
        if not _whole(ledger) or not (offset is None or _whole(offset)):
            raise TypeError
        if not (network is None or (isinstance(network, str) and network)):
            raise TypeError
    except (TypeError, KeyError, AttributeError):
        raise ConfigError(f"CHECKPOINT_PATH={path}: is not a cdp checkpoint: {data!r:.200}") from None
    return Checkpoint(ledger, offset, network)


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Durably replace the checkpoint: write a temp file, fsync it, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(attrs.asdict(checkpoint), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
