"""What runs in a worker process: one ledger through the processor, then the row filters.

Kept apart from the pipeline so worker processes import only this, the processor and
stellar-sdk, not the service's HTTP, gRPC and metrics stacks (about 35 MB less per process).
"""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Mapping
from typing import Any

import attrs

from cdp._config import Config
from cdp._validators import key_type_word
from cdp.extract._ledger import Ledger
from cdp.extract._rows import Row

from ._base import LedgerProcessor, ProcessResult


@attrs.frozen
class RowFilter:
    """The configured row filters; picklable, applied in the worker."""

    contract_ids: frozenset[str] = frozenset()
    asset_codes: frozenset[str] = frozenset()
    asset_issuers: frozenset[str] = frozenset()
    key_types: frozenset[str] = frozenset()  # normalized words, see config.key_type_word
    durability: frozenset[str] = frozenset()  # "persistent" / "temporary"
    balance_holders: frozenset[str] = frozenset()
    include_deleted: bool = True

    @classmethod
    def from_config(cls, config: Config) -> RowFilter:
        return cls(
            contract_ids=frozenset(config.filter_contract_ids),
            asset_codes=frozenset(config.filter_asset_codes),
            asset_issuers=frozenset(config.filter_asset_issuers),
            key_types=frozenset(key_type_word(k) for k in config.filter_key_types),
            durability=frozenset(d.lower().removeprefix("contractdatadurability") for d in config.filter_durability),
            balance_holders=frozenset(config.filter_balance_holders),
            include_deleted=config.include_deleted,
        )

    @property
    def keeps_all(self) -> bool:
        """No filter is set: every row is kept (and need not be looked at)."""
        return self.include_deleted and not (
            self.contract_ids or self.asset_codes or self.asset_issuers or self.key_types or self.durability
            or self.balance_holders
        )  # fmt: skip

    def reason_to_skip(self, row: Row) -> str | None:
        """The filter that drops ``row`` (the metric's ``reason`` label), or None to keep it.

        Rows without the field a filter reads (e.g. from a custom processor) are never dropped by it.
        """
        if self.contract_ids and "contract_id" in row and row["contract_id"] not in self.contract_ids:
            return "contract_id"
        # Asset filters only judge rows that carry asset fields, as the original service does.
        if self.asset_codes and row.get("asset_code") and row["asset_code"] not in self.asset_codes:
            return "asset_code"
        if self.asset_issuers and row.get("asset_issuer") and row["asset_issuer"] not in self.asset_issuers:
            return "asset_issuer"
        if (
            self.key_types
            and "contract_key_type" in row
            and key_type_word(row["contract_key_type"]) not in self.key_types
        ):
            return "key_type"
        if self.durability and "contract_durability" in row:
            if row["contract_durability"].lower().removeprefix("contractdatadurability") not in self.durability:
                return "durability"
        if self.balance_holders and "balance_holder" in row and row["balance_holder"] not in self.balance_holders:
            return "balance_holder"
        if not self.include_deleted and row.get("deleted"):
            return "deleted"
        return None


@attrs.frozen
class WorkResult:
    rows: list[Row]
    skipped: dict[str, int]
    seconds: float
    events: Mapping[str, int]
    error: str | None = None  # "ExceptionType: message" when the processor raised


def process_ledger(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
    """Runs in a worker process: process one ledger and filter its rows."""
    t0 = time.perf_counter()
    rows: list[Row] = []
    skipped: dict[str, int] = {}
    try:
        out = processor.process(ledger)
    except Exception as exc:
        # Returned, not raised: only the message crosses back from a worker process. A raised exception
        # from a deeply nested ScVal (its chain holds a 10,000-frame RecursionError) fails trio-parallel's
        # pickling and the ledger would be reported as "RecursionError ... while pickling".
        return WorkResult([], {}, time.perf_counter() - t0, {}, error=f"{type(exc).__name__}: {exc}")
    produced, events = (out.rows, out.events) if isinstance(out, ProcessResult) else (out, {})
    if row_filter.keeps_all:
        return WorkResult(list(produced), skipped, time.perf_counter() - t0, events)
    for row in produced:
        reason = row_filter.reason_to_skip(row)
        if reason is None:
            rows.append(row)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    return WorkResult(rows, skipped, time.perf_counter() - t0, events)


def dead_letter_record(ledger: Ledger, processor: str, reason: str) -> dict[str, Any]:
    """What a skipped bad ledger leaves in ``DEAD_LETTER_PATH``: why, and its bytes to replay it."""
    return {
        "ledger": ledger.sequence,
        "processor": processor,
        "error": reason,
        "ledger_close_meta_xdr": base64.b64encode(ledger.raw).decode(),
    }


def ignore_stop_signals() -> None:
    """Worker-process initializer: SIGINT/SIGTERM sent to the whole process group are the service's to
    handle; the service stops its workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
