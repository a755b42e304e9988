"""Parquet files in a directory or on object storage (any fsspec URL: ``s3://``, ``gs://``, ``file://``).

Every file is written whole: on a local disk to a temporary name, fsynced and renamed; on object
storage by one PUT, which a reader sees whole or not at all. A file carries, in its key-value
metadata, the ledgers it holds, its row count and the fingerprint of the row-shaping settings, so
on object storage (where no checkpoint file sits beside the output) the files are the checkpoint:
``cdp run`` goes on after the last one, ``cdp backfill`` skips the ones that are done.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from cdp._errors import CdpError, ConfigError
from cdp._fingerprint import RowSettings
from cdp._version import __version__
from cdp.extract import Row

from ._base import Capabilities
from ._parquet import ROW_TYPES, Rolling, file_name, require_pyarrow, to_table, write_table_atomically

if TYPE_CHECKING:
    from cdp._config import Config

LOG = logging.getLogger("cdp.sink")
META_KEY: Final = b"cdp.backfill"
FILE: Final = re.compile(r"^(?P<name>.+)-(?P<first>\d{10})-(?P<last>\d{10})\.parquet$")


@attrs.frozen
class Files:
    """A directory of files, local or on an object store, as one fsspec file system and root."""

    url: str
    fs: Any
    root: str
    local: bool

    @classmethod
    def at(cls, url: str | Path, timeout_s: float = 30.0, setting: str = "OUTPUT") -> Files:
        """Raises ConfigError: no backend for the URL's scheme."""
        from cdp.upstream._fs import open_fs

        fs, root, local = open_fs(str(url), timeout_s, setting)
        return cls(str(url), fs, root.rstrip("/") or "/", local)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> list[str]:
        """The file names directly under the root (none when it does not exist yet), listed now: not from
        fsspec's listing cache, which does not see what other processes (Dask workers) wrote."""
        self.fs.invalidate_cache(self.root)
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self.refused(exc) from None

    def refused(self, exc: Exception) -> Exception:
        """A store failure as one line naming the output (no credentials, access denied, unreachable)."""
        from cdp.upstream._fs import denied

        if denied(exc) or isinstance(exc, OSError):
            return CdpError(f"OUTPUT={self.url}: {' '.join(str(exc).split()) or type(exc).__name__}")
        return exc

    def write_table(self, name: str, table: Any) -> None:
        """The whole file or none: local, temp + fsync + rename; object storage, one PUT."""
        import pyarrow.parquet as pq

        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            write_table_atomically(Path(self.path(name)), table)
        else:
            pq.write_table(table, self.path(name), filesystem=self.fs, write_page_checksum=True)

    def write_text(self, name: str, text: str) -> None:
        if self.local:
            tmp = Path(self.root) / f".{name}.{uuid.uuid4().hex}.tmp"
            tmp.write_text(text)
            os.replace(tmp, Path(self.root) / name)
        else:
            self.fs.pipe_file(self.path(name), text.encode())

    def read_meta(self, name: str) -> dict[str, Any] | None:
        """A file's cdp metadata; None if it is missing, unreadable or not ours.

        Raises:
            CdpError: the store refused (no credentials, access denied).
        """
        import pyarrow.parquet as pq

        from cdp.upstream._fs import denied

        try:
            with self.fs.open(self.path(name), "rb") as f:
                meta = pq.read_schema(f).metadata or {}
            value = json.loads(meta[META_KEY])
        except (KeyError, ValueError):  # not ours, or torn (pyarrow's ArrowInvalid is a ValueError): redone
            return None
        except Exception as exc:
            if isinstance(exc, OSError) and not denied(exc):
                return None  # missing or unreadable: redone
            raise self.refused(exc) from None
        return value if isinstance(value, dict) else None

    def read_table(self, name: str) -> Any:
        import pyarrow.parquet as pq

        with self.fs.open(self.path(name), "rb") as f:
            return pq.read_table(f, page_checksum_verification=True)


def with_meta(table: Any, meta: dict[str, Any]) -> Any:
    """``table`` carrying cdp's metadata (ledgers, rows, fingerprint) beside pyarrow's own."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta)})


def file_meta(first: int, last: int, rows: int, digest: str, settings: dict[str, Any], dead: Sequence[int] = ()) -> Any:
    return {"first": first, "last": last, "rows": rows, "cdp_version": __version__, "fingerprint": digest,
            "settings": settings, "dead_lettered": list(dead)}  # fmt: skip


class ObjectParquetSink(Rolling):
    """Parquet files on object storage; rolled as the local sink rolls them, the files their own checkpoint."""

    name = "parquet"
    capabilities = Capabilities(own_checkpoint=True, backfill="files", records_network=True)

    require = staticmethod(require_pyarrow)

    @classmethod
    def for_config(cls, config: Config, processor_name: str, columns: Sequence[str] | None = None) -> ObjectParquetSink:
        return cls(config, processor_name, columns)

    def __init__(self, config: Config, processor_name: str, columns: Sequence[str] | None = None) -> None:
        require_pyarrow()
        self.config = config
        self.files = Files.at(config.output, config.datastore_timeout_s)
        self.checkpoint_name = config.output
        self.prefix = processor_name
        self.row_type = ROW_TYPES.get(processor_name)
        self.columns = columns
        self.per_file = config.parquet_ledgers_per_file
        self.rows = RowSettings(config)
        self.network: str | None = None  # the network of the rows the files hold, once open() has read it
        self._rows: list[Row] = []
        self._first: int | None = None
        self._last: int | None = None

    def open(self) -> int | None:
        """The last ledger the files hold, checked to be one run of ledgers made with these settings.

        Raises:
            ConfigError: a gap between files, or a file made with other settings.
            CdpError: the store cannot be listed.
        """
        where = f"OUTPUT={self.config.output}"
        found = [(FILE.match(n), n) for n in self.files.names()]
        ranges = sorted((int(m["first"]), int(m["last"]), n) for m, n in found if m and m["name"] == self.prefix)
        if not ranges:
            return None
        for (_, last, name), (first, _, after) in zip(ranges, ranges[1:], strict=False):
            if first != last + 1:
                raise ConfigError(f"{where}: ledgers {last + 1}..{first - 1} are missing between {name} and {after}: "
                                  "fill them (cdp backfill) or use another output")  # fmt: skip
        last, name = ranges[-1][1], ranges[-1][2]
        meta = self.files.read_meta(name)
        self.rows.adopt(((meta or {}).get("settings") or {}).get("network_passphrase"))  # auto: the files' network
        self.network = self.rows.network
        if meta is None or meta.get("fingerprint") != self.rows.digest:
            raise ConfigError(f"{where}: {name} was made with other row settings (or not by cdp): use another output")
        return last

    def set_network(self, network: str) -> None:
        """The rows are of ``network``: recorded in the files (``NETWORK_PASSPHRASE=auto``)."""
        self.rows.adopt(network)

    def _put(self, first: int, last: int, rows: list[Row]) -> None:
        t0 = time.perf_counter()
        table = to_table(rows, self.config.schema, self.row_type, self.columns)
        table = with_meta(table, file_meta(first, last, len(rows), self.rows.digest, self.rows.settings))
        name = file_name(self.prefix, first, last)
        try:
            self.files.write_table(name, table)
        except OSError:
            raise
        except Exception as exc:
            raise self.files.refused(exc) from None
        LOG.info("parquet file written path=%s ledgers=%d..%d rows=%d seconds=%.2f", self.files.path(name), first,
                 last, len(rows), time.perf_counter() - t0)  # fmt: skip

    def close(self) -> None:
        pass
