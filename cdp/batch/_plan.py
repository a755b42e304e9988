"""What a backfill is made of: partitions aligned to the output files, and how a finished one is known.

A partition's file carries, in its Parquet key-value metadata, the ledgers it covers, its row count,
the ``cdp`` version and a fingerprint of the settings that shape rows. A rerun trusts a file only
if all of these match; anything else (another fingerprint, a torn or foreign file) is redone.
"""

from __future__ import annotations

from typing import Final

import attrs

from cdp._fingerprint import ROW_SETTINGS as ROW_SETTINGS
from cdp._fingerprint import fingerprint as fingerprint
from cdp.sinks._files import Files

MANIFEST: Final = "_cdp_backfill.json"


@attrs.frozen
class Partition:
    """Ledgers ``first..last`` written as ``name`` (the Parquet sink's name for them)."""

    first: int
    last: int
    name: str

    @property
    def ledgers(self) -> int:
        return self.last - self.first + 1


def plan(start: int, end: int, per_file: int, prefix: str) -> list[Partition]:
    """``start..end`` cut at multiples of ``per_file``: the files ``cdp run`` would write for the range."""
    from cdp.sinks._parquet import file_name

    parts = []
    first = start
    while first <= end:
        last = min(end, (first // per_file + 1) * per_file - 1)
        parts.append(Partition(first, last, file_name(prefix, first, last)))
        first = last + 1
    return parts


def is_done(files: Files, partition: Partition, digest: str, verify: bool = False) -> bool:
    """True if the partition's file is there, complete, written with the same row settings; with
    ``verify``, only if every page also reads back (a byte flipped inside a page leaves the footer, and
    so the metadata, intact) and holds the rows its metadata counts."""
    meta = files.read_meta(partition.name)
    done = (
        meta is not None
        and meta.get("first") == partition.first
        and meta.get("last") == partition.last
        and meta.get("fingerprint") == digest
    )
    if not (done and verify):
        return done
    assert meta is not None
    try:
        return bool(files.read_table(partition.name).num_rows == meta.get("rows"))
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError; a corrupt page may be either
        return False
