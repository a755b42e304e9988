"""The default processor: Soroban contract-data rows with the stellar-etl ``contract_data`` fields."""

from __future__ import annotations

import attrs

from cdp._validators import AUTO, NETWORKS
from cdp.extract import ContractDataRow, Ledger, Mode, extract_rows, extract_rows_fast
from cdp.extract._rows import row_fields
from cdp.xdr._network import prove_network

from ._base import ProcessResult

_INSTANCE = "ScValTypeScvLedgerKeyContractInstance"


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
        self.check_network_known(rows, passphrase, ledger)
        return ProcessResult(self.trimmed(rows), {"fast_path_fallback": 1} if fell_back else {})

    def network_of(self, ledger: Ledger) -> str:
        """The passphrase SAC asset ids derive under; ``auto`` still for a ledger with no transaction.

        Raises:
            ValueError: under ``auto``, the ledger belongs to none of the known networks.
        """
        if self.passphrase != AUTO:
            return self.passphrase
        if ledger.network is not None:
            return ledger.network
        proof = prove_network(ledger.raw, NETWORKS.values())
        if proof is None:
            return AUTO
        if proof.passphrase is None:
            raise ValueError(f"belongs to none of {', '.join(NETWORKS)}: set NETWORK_PASSPHRASE to its passphrase")
        return proof.passphrase

    @staticmethod
    def check_network_known(rows: list[ContractDataRow], passphrase: str, ledger: Ledger) -> None:
        """A contract instance's SAC asset needs the network: refuse rather than leave it out silently
        (a ledger with no transaction has no contract-data change, so this never fires on real ones)."""
        if passphrase == AUTO and any(r["contract_key_type"] == _INSTANCE for r in rows):
            raise ValueError("has contract instances but no transaction to prove its network: set NETWORK_PASSPHRASE")

    def trimmed(self, rows: list[ContractDataRow]) -> list[ContractDataRow]:
        """``rows`` without the instance extras where ``INSTANCE_EXTRAS=false``."""
        if not self.instance_extras:
            for row in rows:
                del row["contract_instance_type"], row["contract_instance_wasm_hash"]
        return rows
