"""Iceberg output (``OUTPUT=iceberg://NAMESPACE[.TABLE]``): committed ledgers appended as snapshots.

Ledgers are held in memory and appended together, one snapshot per commit, at least every
``ICEBERG_COMMIT_INTERVAL_S`` while ledgers arrive and after at most ``ICEBERG_COMMIT_LEDGERS``: few
files, and a reader never sees part of a ledger. The snapshot's summary carries the last ledger it
holds, so the table is the checkpoint: a crash before a commit loses nothing that will not be
written again, and one after it replays nothing. Files a killed run wrote but never committed are
removed when the next run opens the table (``cdp lake compact`` does it too).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from cdp._errors import ConfigError
from cdp._fingerprint import RowSettings
from cdp._locks import exclusive
from cdp.extract import Row

from ._base import Capabilities, Durable
from ._lake import (
    Target,
    check_settings,
    close_catalog,
    committed,
    conform,
    failing,
    open_catalog,
    open_table,
    remove_orphans,
    require_pyiceberg,
    summary,
)

if TYPE_CHECKING:
    from cdp._config import Config

LOG = logging.getLogger("cdp.sink")


class IcebergSink:
    """Appends committed ledgers to one Iceberg table; ``open()`` says the last ledger it holds."""

    name = "iceberg"
    require = staticmethod(require_pyiceberg)
    capabilities = Capabilities(
        own_checkpoint=True, group_commit=True, backfill="commit", records_network=True, bootstrap="table"
    )

    @classmethod
    def for_config(cls, config: Config, processor_name: str, columns: Sequence[str] | None = None) -> IcebergSink:
        return cls(config, processor_name, columns)

    def __init__(self, config: Config, processor_name: str, columns: Sequence[str] | None = None) -> None:
        require_pyiceberg()
        from ._parquet import ROW_TYPES, require_pyarrow, to_table

        require_pyarrow()
        self.config = config
        self.target = Target.parse(config.output, processor_name)
        self.checkpoint_name = self.target.identifier
        self.where = f"OUTPUT={config.output}"
        self.row_type = ROW_TYPES.get(processor_name)
        self.columns = columns
        self.rows = RowSettings(config)
        self._arrow_schema = to_table([], config.schema, self.row_type, columns).schema
        self._table: Any = None
        self._catalog: Any = None
        self._lock = contextlib.ExitStack()
        self._rows: list[Row] = []
        self._last: int | None = None  # the last ledger held in memory, not yet committed
        self._pending = 0  # ledgers held
        self._since = time.monotonic()
        self.snapshots = 0  # committed by this sink
        self.network: str | None = None  # the network of the rows the table holds, once open() has read it

    def set_network(self, network: str) -> None:
        """The rows are of ``network``: recorded with them (``NETWORK_PASSPHRASE=auto``)."""
        self.rows.adopt(network)

    @property
    def table(self) -> Any:
        """The pyiceberg table, once ``open()`` has loaded it."""
        return self._table

    def open(self, create: bool = True) -> int | None:
        """Load (or ``create``) the table, check it holds rows of these settings, remove files no snapshot
        uses (a killed run's), and say the last ledger it holds. A table on a local disk is locked for as
        long as the sink is open: removing a killed writer's files is safe only with no other writer.

        Raises:
            ConfigError: the table's rows were made with other settings, or not by cdp; another cdp
                process writes it; no such table and not ``create``.
            CdpError: the catalog or warehouse cannot be reached.
        """
        if not len(self._arrow_schema):
            raise ConfigError(f"{self.where}: PROCESSOR={self.config.processor} declares no columns")
        self._catalog = catalog = open_catalog(self.config)
        width = self.config.parquet_ledgers_per_file
        self._table = open_table(catalog, self.target, self._arrow_schema, width, create=create)
        location = urlsplit(self._table.location())
        if location.scheme in ("", "file"):
            self._lock.enter_context(exclusive(Path(location.path), self.where.split("=", 1)[0]))
        with failing(self.where):
            held = committed(self._table, self.target)
            self.rows.adopt((held.settings or {}).get("network_passphrase"))  # auto goes on under the table's
            self.network = self.rows.network if held.last is not None else None
            check_settings(self.target, held, self.rows.digest, self.rows.settings)
            for uri in remove_orphans(self._table):
                LOG.warning("removed a file no snapshot uses (a stopped run's) path=%s", uri)
        return held.last

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        return await self.write_many([(sequence, rows)])

    async def write_many(self, items: Sequence[tuple[int, Sequence[Row]]]) -> Durable | None:
        for sequence, rows in items:
            self._rows.extend(rows)
            self._last = sequence
            self._pending += 1
        due = time.monotonic() - self._since >= self.config.iceberg_commit_interval_s
        if due or self._pending >= self.config.iceberg_commit_ledgers:
            return await self.flush()
        await trio.lowlevel.checkpoint()
        return None

    async def flush(self) -> Durable | None:
        if self._last is None:
            await trio.lowlevel.checkpoint()
            return None
        last, rows = self._last, self._rows
        await trio.to_thread.run_sync(self._commit, last, rows)
        self._rows, self._last, self._pending, self._since = [], None, 0, time.monotonic()
        return Durable(last)

    def _commit(self, last: int, rows: list[Row]) -> None:
        from ._parquet import to_table

        data = conform(to_table(rows, self.config.schema, self.row_type, self.columns), self._table)
        with failing(self.where):
            self._table.append(data, snapshot_properties=summary(last, self.rows.digest, self.rows.settings))
        self.snapshots += 1
        LOG.info("iceberg snapshot committed table=%s last_ledger=%d rows=%d", self.checkpoint_name, last, len(rows))

    def close(self) -> None:
        self._lock.close()
        self._table = None
        close_catalog(self._catalog)
        self._catalog = None
