"""The sink contract: one ledger's rows at a time, and what is durable afterwards.

A sink says what is durable after each write (``Durable``: the last ledger fully written and, for
a file, the offset after it), so the checkpoint never runs ahead of the output and a restart can
cut off anything written after it. A sink type declares what it can do (``Capabilities``); the
service, the Arrow Flight hub and the backfill read those, never a sink's name. ``open_sink`` picks
the sink the configuration names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from cdp.extract import Row

if TYPE_CHECKING:
    from cdp._config import Config

RowsCallback = Callable[[int, Sequence[Row]], Awaitable[None] | None]


@attrs.frozen
class Durable:
    """Every ledger up to ``ledger`` is durably written; ``offset`` is the file size after it."""

    ledger: int
    offset: int | None = None


@attrs.frozen
class Capabilities:
    """What a sink type can do, declared once on the class (dlt's destination capabilities)."""

    own_checkpoint: bool = False  # holds its checkpoint in the output itself: ``open()`` says the last ledger
    state_records: bool = False  # takes the TTL and eviction records beside the rows (current state)
    group_commit: bool = False  # ``write_many``: several ledgers in one commit when the service is behind
    replay: Literal["jsonl", "parquet"] | None = None  # Arrow Flight can serve committed ledgers back from it
    local_path: Literal["file", "directory"] | None = None  # OUTPUT is local: locked for the run, removed if left empty
    backfill: Literal["files", "ordered", "commit"] | None = None  # how ``cdp backfill`` writes it: see batch
    bootstrap: Literal["tables", "file", "table"] | None = None  # where ``cdp bootstrap`` puts a state
    records_network: bool = False  # ``set_network``: told the network the rows are of, it records it with them


class Sink(Protocol):
    name: str
    capabilities: Capabilities

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        """Write one ledger's rows; return what is now durable (None: nothing new, keep the checkpoint)."""
        ...

    async def flush(self) -> Durable | None:
        """Make everything written so far durable (at the end of a run)."""
        ...

    def close(self) -> None: ...


class _WritesThrough:
    """For sinks whose every write is already durable: nothing is left to flush."""

    capabilities: Capabilities = Capabilities()

    async def flush(self) -> Durable | None:
        await trio.lowlevel.checkpoint()
        return None


def sink_type(config: Config) -> type[Any]:
    """The sink class ``config.format`` (and the output's form) names; its ``capabilities`` say what it does."""
    if config.format == "postgres":
        from ._postgres import PostgresSink

        return PostgresSink
    if config.format == "iceberg":
        from ._iceberg import IcebergSink

        return IcebergSink
    if config.format == "parquet":
        from ._files import ObjectParquetSink
        from ._parquet import ParquetSink

        return ObjectParquetSink if is_url(config.output) else ParquetSink
    from ._jsonl import JsonlFileSink, StdoutSink

    return StdoutSink if config.output == "-" else JsonlFileSink


def is_url(output: str) -> bool:
    """An fsspec URL (``s3://``, ``gs://``, ``file://``), not a local path."""
    return "://" in output


def open_sink(
    config: Config,
    *,
    on_rows: RowsCallback | None = None,
    start: int,
    resume_offset: int | None,
    processor_name: str,
    columns: Sequence[str] | None = None,
) -> Sink:
    """The sink ``config`` asks for, of those whose checkpoint is a file: a callback when given, else
    Parquet in a directory, stdout or a JSONL file (a sink holding its own checkpoint has ``for_config``).

    Raises:
        OSError: the output cannot be opened.
    """
    from ._jsonl import CallbackSink, JsonlFileSink, StdoutSink

    if on_rows is not None:
        return CallbackSink(on_rows)
    if config.format == "parquet":
        from ._parquet import ParquetSink

        return ParquetSink(
            Path(config.output), processor_name, config.schema, config.parquet_ledgers_per_file, start, columns
        )
    if config.output == "-":
        return StdoutSink()
    return JsonlFileSink(Path(config.output), resume_offset)
