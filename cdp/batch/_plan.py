"""What a backfill is made of: partitions aligned to the output files, and how a finished one is known.

A partition's file carries, in its Parquet key-value metadata, the ledgers it covers, its row count,
the ``cdp`` version and a fingerprint of the settings that shape rows. A rerun trusts a file only
if all of these match; anything else (another fingerprint, a torn or foreign file) is redone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import attrs

from cdp._config import Config

META_KEY: Final = b"cdp.backfill"
MANIFEST: Final = "_cdp_backfill.json"

# The settings that decide which rows a ledger yields and how they are stored; nothing else does
# (DECODER only changes how fast: both decoders yield the same rows).
ROW_SETTINGS: Final = (
    "network_passphrase", "processor", "mode", "instance_extras", "include_deleted", "schema",
    "filter_contract_ids", "filter_asset_codes", "filter_asset_issuers", "filter_key_types", "filter_durability",
    "filter_balance_holders",
)  # fmt: skip


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


def fingerprint(config: Config) -> tuple[str, dict[str, Any]]:
    """A short hash of the row-shaping settings, and those settings (kept in the metadata to explain it)."""
    settings = {name: _plain(getattr(config, name)) for name in ROW_SETTINGS}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16], settings


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, tuple | frozenset | set) else value


def read_meta(path: Path) -> dict[str, Any] | None:
    """A partition file's backfill metadata; None if it is missing, unreadable or not ours."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        value = json.loads(meta[META_KEY])
    except (OSError, KeyError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None
    return value if isinstance(value, dict) else None


def is_done(path: Path, partition: Partition, digest: str, verify: bool = False) -> bool:
    """True if ``path`` is this partition's complete file, written with the same row settings; with
    ``verify``, only if every page also reads back (a byte flipped inside a page leaves the footer, and
    so the metadata, intact) and holds the rows its metadata counts."""
    meta = read_meta(path)
    done = (
        meta is not None
        and meta.get("first") == partition.first
        and meta.get("last") == partition.last
        and meta.get("fingerprint") == digest
    )
    if not (done and verify):
        return done
    import pyarrow.parquet as pq

    assert meta is not None
    try:
        return bool(pq.read_table(path, page_checksum_verification=True).num_rows == meta.get("rows"))
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError; a corrupt page may be either
        return False
