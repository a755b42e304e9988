"""Reading committed ledgers back from the service's own output, for clients that resume.

Only what the checkpoint covers is read: a JSONL file up to the durable offset (a line being
written after it is never half-read), Parquet files whose ledgers are all durable. Rows come back
as the processor emitted them, grouped by ledger, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import attrs

from cdp.extract import Row


class ReplayError(Exception):
    """The output cannot give the ledgers asked for (not retained, unreadable)."""


@attrs.frozen
class Retained:
    """Where the committed rows are kept: a JSONL file, or Parquet files ``prefix-first-last.parquet``."""

    kind: str  # "jsonl" or "parquet"
    path: Path
    prefix: str = ""
    schema: str = "full"
    row_type: type | None = None
    begins_at: int | None = None  # the output's first ledger, where this run started it (else: its first row's)


class Replayable(Protocol):
    """A sink declaring ``replay``: where it keeps the committed rows, and its offset (JSONL) now."""

    def retained(self, begins_at: int) -> tuple[Retained, int | None]: ...


def committed_ledgers(
    retained: Retained, first: int, last: int, end_offset: int | None
) -> Iterator[tuple[int, list[Row]]]:
    """``(sequence, rows)`` for each ledger in ``first..last`` that has rows, in order.

    Raises:
        ReplayError: ``first`` is before the oldest retained ledger, or the output cannot be read.
    """
    try:
        rows = (
            _jsonl(retained, first, last, end_offset) if retained.kind == "jsonl" else _parquet(retained, first, last)
        )
        current: int | None = None
        batch: list[Row] = []
        for row in rows:
            seq = int(row["ledger_sequence"])
            if seq != current:
                if current is not None:
                    yield current, batch
                current, batch = seq, []
            batch.append(row)
        if current is not None:
            yield current, batch
    except OSError as exc:
        raise ReplayError(f"cannot read {retained.path}: {exc.strerror or exc}") from None


def _not_retained(retained: Retained, first: int, oldest: int | None) -> None:
    if retained.begins_at is not None:
        oldest = retained.begins_at if oldest is None else min(oldest, retained.begins_at)
    if oldest is None or first < oldest:
        held = f"begins at ledger {oldest}" if oldest is not None else "holds no rows yet"
        raise ReplayError(f"{retained.path} {held}: ledger {first} is not retained")


def _seq(line: bytes, path: Path, at: int) -> int:
    try:
        return int(json.loads(line)["ledger_sequence"])
    except (ValueError, KeyError, TypeError):
        raise ReplayError(f"{path}: the line at byte {at} is not a row with a ledger_sequence") from None


def _first_at_or_after(f: IO[bytes], path: Path, first: int, end: int) -> int:
    """Offset of the first line whose ledger is >= ``first`` (``end`` if none): a binary search over
    line starts, as rows are in ledger order."""
    lo, hi = 0, end  # every line before lo is < first; hi is the answer or end
    while lo < hi:
        mid = (lo + hi) // 2
        f.seek(max(mid - 1, 0))
        if mid:
            f.readline()
        p = f.tell() if mid else 0
        if p >= hi:  # no line starts in mid..hi: step from lo
            p = lo
        f.seek(p)
        line = f.readline()
        if _seq(line, path, p) < first:
            lo = p + len(line)
        else:
            hi = p
    return lo


def _jsonl(retained: Retained, first: int, last: int, end_offset: int | None) -> Iterator[Row]:
    path = retained.path
    with path.open("rb") as f:
        end = end_offset if end_offset is not None else f.seek(0, 2)
        f.seek(0)
        _not_retained(retained, first, _seq(f.readline(), path, 0) if end else None)
        pos = _first_at_or_after(f, path, first, end)
        f.seek(pos)
        while pos < end:
            line = f.readline()
            pos += len(line)
            row = json.loads(line)
            if int(row["ledger_sequence"]) > last:
                return
            yield row


def parquet_files(retained: Retained) -> list[tuple[int, int, Path]]:
    """``(first, last, path)`` of the output's files, oldest first."""
    from ._parquet import _FILE

    found = []
    for path in retained.path.iterdir():
        m = _FILE.match(path.name)
        if m and m["name"] == retained.prefix:
            found.append((int(m["first"]), int(m["last"]), path))
    return sorted(found)


def _parquet(retained: Retained, first: int, last: int) -> Iterator[Row]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ._parquet import rows_from_table

    files = parquet_files(retained)
    _not_retained(retained, first, files[0][0] if files else None)
    for lo, hi, path in files:
        if hi < first or lo > last:
            continue
        table: Any = pq.read_table(path)
        if lo < first or hi > last:
            seq = table.column("ledger_sequence")
            table = table.filter(pc.and_(pc.greater_equal(seq, first), pc.less_equal(seq, last)))
        yield from rows_from_table(table, retained.schema, retained.row_type)
