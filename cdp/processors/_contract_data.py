"""The default processor: Soroban contract-data rows with the stellar-etl ``contract_data`` fields."""

from __future__ import annotations

import attrs

from cdp._validators import AUTO
from cdp.extract import ContractDataRow, Ledger, Mode, extract_rows, extract_rows_fast
from cdp.extract._rows import row_fields

from ._base import ProcessResult


@attrs.frozen
class ContractDataProcessor:
    """Soroban contract-data rows with the stellar-etl ``contract_data`` fields.

    ``fast`` walks the XDR and decodes only contract-data and TTL entries, falling back to the full
    decode for a ledger it cannot vouch for; ``fast=False`` always decodes fully. ``passphrase`` may be
    ``auto``: SAC asset ids then derive under the network the source verified (``Ledger.network``),
    or, where none did, the one the ledger's own transaction hashes prove.
    """

    passphrase: str
    mode: Mode = "compact"
    instance_extras: bool = True
    fast: bool = True
    name: str = "contract_data"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every field of its rows, for a file of no rows (the Parquet schema)."""
        return row_fields(self.mode, self.instance_extras)

    def process(self, ledger: Ledger) -> ProcessResult:
        passphrase = self.network_of(ledger)
        if self.fast:
            rows, fell_back = extract_rows_fast(ledger.raw, passphrase, self.mode)
        else:
            rows, fell_back = extract_rows(ledger.raw, passphrase, self.mode), False
        return ProcessResult(self.trimmed(rows), {"fast_path_fallback": 1} if fell_back else {})

    def network_of(self, ledger: Ledger) -> str:
        """The passphrase given, else the one the source verified; ``auto`` still where neither is
        known (the extraction then proves it from the ledger itself)."""
        if self.passphrase != AUTO or ledger.network is None:
            return self.passphrase
        return ledger.network

    def trimmed(self, rows: list[ContractDataRow]) -> list[ContractDataRow]:
        """``rows`` without the instance extras where ``INSTANCE_EXTRAS=false``."""
        if not self.instance_extras:
            for row in rows:
                del row["contract_instance_type"], row["contract_instance_wasm_hash"]
        return rows
