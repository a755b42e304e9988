"""Where committed rows go: JSONL on stdout or in a file, Parquet files, or a callback.

A sink writes one ledger's rows at a time and says what is durable afterwards (``Durable``: the
last ledger fully written and, for a file, the offset after it), so the checkpoint never runs
ahead of the output and a restart can cut off anything written after it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

import attrs
import trio

from .processor import Row

RowsCallback = Callable[[int, Sequence[Row]], Awaitable[None] | None]


def dumps_row(row: Row) -> str:
    """One compact JSON object, keys sorted: the JSONL line format everywhere in cdp."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


class JsonlFileSink(_WritesThrough):
    """Appends to a file; ``resume_offset`` truncates it back to the last checkpoint first."""

    name = "jsonl_file"

    def __init__(self, path: Path, resume_offset: int | None) -> None:
        self.path = path
        # Unbuffered: after a failed write (disk full) nothing is left in a buffer to fail again at close.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.offset = resume_offset or 0
        os.ftruncate(self._fd, self.offset)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        if rows:
            data = "".join(dumps_row(r) + "\n" for r in rows).encode()
            await trio.to_thread.run_sync(self._write_durably, data)
        return Durable(sequence, self.offset)

    def _write_durably(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.offset += len(data)

    def close(self) -> None:
        os.close(self._fd)


class StdoutSink(_WritesThrough):
    name = "stdout"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        if rows:
            self.stream.write("".join(dumps_row(r) + "\n" for r in rows))
            self.stream.flush()
        await trio.lowlevel.checkpoint()
        return Durable(sequence)

    def close(self) -> None:
        self.stream.flush()


class CallbackSink(_WritesThrough):
    """Hands each committed ledger's rows to user code (sync or async); it runs before the checkpoint."""

    name = "callback"

    def __init__(self, callback: RowsCallback) -> None:
        self.callback = callback

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        result = self.callback(sequence, rows)
        if result is not None:
            await result
        else:
            await trio.lowlevel.checkpoint()
        return Durable(sequence)

    def close(self) -> None:
        pass
