"""``--processor restored_keys``: the contract-data and contract-code entries each ledger restores."""

from __future__ import annotations

import attrs

from cdp.extract import Ledger
from cdp.extract._restores import restored_rows, restored_rows_full
from cdp.extract._rows import RestoredKeyRow

from ._base import ProcessResult


@attrs.frozen
class RestoredKeysProcessor:
    """One row per ``LEDGER_ENTRY_RESTORED`` change of contract data or code, with the TTL the ledger
    gives it (none from ledgers before protocol 23, which had no such change)."""

    fast: bool = True
    name: str = "restored_keys"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(RestoredKeyRow.__annotations__)

    def process(self, ledger: Ledger) -> ProcessResult:
        if not self.fast:
            return ProcessResult(restored_rows_full(ledger.raw))
        rows, fell_back = restored_rows(ledger.raw)
        return ProcessResult(rows, {"fast_path_fallback": 1} if fell_back else {})
