"""TTL rows, as stellar-etl's ``ttl`` table: the second built-in processor (``--processor ttl``).

``key_hash`` is the sha256 of the data/code ``LedgerKey``, so it joins
``contract_data.ledger_key_hash``.
"""

from __future__ import annotations

import attrs

from cdp.extract import Ledger, Mode, TtlRow
from cdp.extract._changes import REMOVED, TTL, arm, compact, ledger_info, read_changes
from cdp.extract._rows import CHANGE_FIELDS
from cdp.extract._rules import closed_at


@attrs.frozen
class TtlProcessor:
    """One row per TTL entry change (``changes``) or per key and ledger (``compact``, ETL parity)."""

    mode: Mode = "compact"
    name: str = "ttl"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every field of its rows, for a file of no rows (the Parquet schema)."""
        base = ("key_hash", "live_until_ledger_seq", "last_modified_ledger", "ledger_entry_change", "deleted",
                "closed_at", "ledger_sequence")  # fmt: skip
        return base + (CHANGE_FIELDS if self.mode == "changes" else ())

    def process(self, ledger: Ledger) -> list[TtlRow]:
        lcm = ledger.meta
        info = ledger_info(lcm)
        changes = list(read_changes(lcm, (TTL,)))
        if self.mode == "compact":
            changes = compact(changes)
        rows: list[TtlRow] = []
        for c in changes:
            entry = c.entry
            ttl = arm(entry.data.ttl)
            row: TtlRow = {
                "key_hash": ttl.key_hash.hash.hex(),
                "live_until_ledger_seq": ttl.live_until_ledger_seq.uint32,
                "last_modified_ledger": entry.last_modified_ledger_seq.uint32,
                "ledger_entry_change": c.change_type,
                "deleted": c.change_type == REMOVED,
                "closed_at": closed_at(info.close_time),
                "ledger_sequence": info.sequence,
            }
            if self.mode == "changes":
                row["tx_hash"] = c.tx_hash
                row["tx_index"] = c.tx_index
                row["operation_index"] = c.operation_index
                row["change_group"] = c.group
            rows.append(row)
        if self.mode == "compact":
            rows.sort(key=lambda r: r["key_hash"])
        return rows
