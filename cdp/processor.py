"""The processor seam: one ledger in, rows out, run in a worker process.

A processor must be picklable and hold no Trio objects: the pipeline ships it to worker processes
(``trio-parallel``) so CPU-heavy work uses every core. ``ContractDataProcessor`` is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import attrs
from stellar_sdk import xdr

from .changes import decode_ledger
from .contract_data import INSTANCE_FIELDS, Mode, Row, extract_rows

__all__ = ["ContractDataProcessor", "Ledger", "LedgerProcessor", "Row"]


@attrs.frozen
class Ledger:
    """One upstream ledger: its sequence, close time (unix seconds) and raw XDR.

    ``meta`` decodes the full ``LedgerCloseMeta`` on first use (about 1 s for a pubnet ledger).
    """

    sequence: int
    close_time: int | None
    raw: bytes = attrs.field(repr=lambda raw: f"<{len(raw)} bytes>")

    @cached_property
    def meta(self) -> xdr.LedgerCloseMeta:
        return decode_ledger(self.raw)


@runtime_checkable
class LedgerProcessor(Protocol):
    """Turns one ledger into rows (JSON-ready dicts); raise to reject the ledger.

    ``name`` labels its metrics and logs.
    """

    @property
    def name(self) -> str: ...

    def process(self, ledger: Ledger) -> Sequence[Row]: ...


@attrs.frozen
class ContractDataProcessor:
    """Soroban contract-data rows with the stellar-etl ``contract_data`` fields."""

    passphrase: str
    mode: Mode = "compact"
    instance_extras: bool = True
    name: str = "contract_data"

    def process(self, ledger: Ledger) -> list[Row]:
        rows = extract_rows(ledger.raw, self.passphrase, self.mode)
        if not self.instance_extras:
            for row in rows:
                for f in INSTANCE_FIELDS:
                    del row[f]
        return rows


def describe(processor: Any) -> str:
    return str(getattr(processor, "name", type(processor).__name__))
