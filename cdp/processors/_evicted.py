"""``--processor evicted_keys``: the contract-data keys each ledger evicts, as rows for any sink."""

from __future__ import annotations

import attrs

from cdp.extract import Ledger
from cdp.extract._evictions import evicted_rows
from cdp.extract._rows import EvictedKeyRow


@attrs.frozen
class EvictedKeysProcessor:
    """One row per evicted contract-data key (none from ledgers before protocol 20)."""

    name: str = "evicted_keys"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(EvictedKeyRow.__annotations__)

    def process(self, ledger: Ledger) -> list[EvictedKeyRow]:
        return evicted_rows(ledger.raw)
