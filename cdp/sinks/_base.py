"""The sink contract: one ledger's rows at a time, and what is durable afterwards.

A sink says what is durable after each write (``Durable``: the last ledger fully written and, for
a file, the offset after it), so the checkpoint never runs ahead of the output and a restart can
cut off anything written after it. ``open_sink`` picks the sink the configuration names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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


class Sink(Protocol):
    name: str

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        """Write one ledger's rows; return what is now durable (None: nothing new, keep the checkpoint)."""
        ...

    async def flush(self) -> Durable | None:
        """Make everything written so far durable (at the end of a run)."""
        ...

    def close(self) -> None: ...


class _WritesThrough:
    """For sinks whose every write is already durable: nothing is left to flush."""

    async def flush(self) -> Durable | None:
        await trio.lowlevel.checkpoint()
        return None


def open_sink(
    config: Config,
    *,
    on_rows: RowsCallback | None = None,
    start: int,
    resume_offset: int | None,
    processor_name: str,
    columns: Sequence[str] | None = None,
) -> Sink:
    """The sink ``config`` asks for: a callback when given, else Parquet, stdout or a JSONL file.

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
