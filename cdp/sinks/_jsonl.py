"""JSONL on stdout or in a file, and callbacks: the sinks with no extra dependencies."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import trio

from cdp._json import json_lines, json_text
from cdp.extract import Row

from ._base import Capabilities, Durable, RowsCallback, _WritesThrough
from ._replay import Retained


def dumps_row(row: Row) -> str:
    """One compact JSON object, keys sorted: the JSONL line format everywhere in cdp."""
    return json_text(row)


class JsonlFileSink(_WritesThrough):
    """Appends to a file; ``resume_offset`` truncates it back to the last checkpoint first.

    A path that is not a regular file (``/dev/null``, a FIFO) is written as a stream: nothing to
    truncate or fsync, and no offset to resume from. Opening a FIFO waits for its reader.
    """

    name = "jsonl_file"
    capabilities = Capabilities(group_commit=True, replay="jsonl", local_path="file")

    def __init__(self, path: Path, resume_offset: int | None) -> None:
        self.path = path
        # Unbuffered: after a failed write (disk full) nothing is left in a buffer to fail again at close.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        if not self.regular:  # a stream keeps nothing to replay from
            self.capabilities = Capabilities(group_commit=True, local_path="file")
        self.offset = resume_offset or 0
        if self.regular:
            os.ftruncate(self._fd, self.offset)
            os.lseek(self._fd, self.offset, os.SEEK_SET)

    def retained(self, begins_at: int) -> tuple[Retained, int | None]:
        """The file, replayed to Arrow Flight clients that fell behind, and its committed size."""
        return Retained("jsonl", self.path, begins_at=begins_at), self.offset

    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        if rows:
            data = json_lines(rows)
            await trio.to_thread.run_sync(self._write_durably, data)
        return Durable(sequence, self.offset if self.regular else None)

    async def write_many(self, items: Sequence[tuple[int, Sequence[Row]]]) -> Durable | None:
        """Several ledgers with one write and one fsync (group commit), encoded off the event loop."""
        await trio.to_thread.run_sync(self._encode_and_write, items)
        return Durable(items[-1][0], self.offset if self.regular else None)

    def _encode_and_write(self, items: Sequence[tuple[int, Sequence[Row]]]) -> None:
        data = json_lines(r for _, rows in items for r in rows)
        if data:
            self._write_durably(data)

    def _write_durably(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if self.regular:
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
