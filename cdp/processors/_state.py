"""What a current-state table needs from a ledger: its contract-data rows, and besides them the TTLs
it sets and the keys it evicts (the PostgreSQL sink's processor; rows of those two are marked)."""

from __future__ import annotations

import attrs

from cdp._errors import ConfigError
from cdp.extract import Ledger, Row
from cdp.extract._fast import extract_state_fast, extract_state_full
from cdp.extract._rows import STATE_KIND as KIND

from ._base import LedgerProcessor, ProcessResult, describe
from ._contract_data import ContractDataProcessor


@attrs.frozen
class ContractStateProcessor:
    """``contract_data`` rows, then ``{"_kind": "ttl", "key_hash", "live_until_ledger_seq"}`` per TTL
    the ledger leaves set, then ``{"_kind": "eviction", ...}`` per evicted contract-data key."""

    data: ContractDataProcessor
    name: str = "contract_data"

    @classmethod
    def wrapping(cls, processor: LedgerProcessor) -> ContractStateProcessor:
        """The state processor around ``processor``, which must be the contract-data one.

        Raises:
            ConfigError: naming the processor.
        """
        if not isinstance(processor, ContractDataProcessor):
            raise ConfigError(f"FORMAT=postgres: keeps contract-data state; not for PROCESSOR={describe(processor)}")
        return cls(processor)

    @property
    def fast(self) -> bool:
        return self.data.fast

    @property
    def columns(self) -> tuple[str, ...]:
        return self.data.columns

    def process(self, ledger: Ledger) -> ProcessResult:
        d = self.data
        extract = extract_state_fast if d.fast else extract_state_full  # fast: one walk for all three
        state = extract(ledger.raw, d.network_of(ledger), d.mode)
        extra: list[Row] = [
            {KIND: "ttl", "key_hash": k, "live_until_ledger_seq": v, "ledger_sequence": ledger.sequence}
            for k, v in state.ttls
        ]
        extra += [{KIND: "eviction", **r} for r in state.evictions]
        return ProcessResult([*d.trimmed(state.rows), *extra], {"fast_path_fallback": 1} if state.fell_back else {})
