"""The ``LedgerProcessor`` seam and the built-in processors (``contract_data``, ``ttl``)."""

from ._base import LedgerProcessor as LedgerProcessor
from ._base import ProcessResult as ProcessResult
from ._base import describe as describe
from ._contract_data import ContractDataProcessor as ContractDataProcessor
from ._registry import BUILTIN as BUILTIN
from ._registry import load_processor as load_processor
from ._ttl import TtlProcessor as TtlProcessor
from ._work import RowFilter as RowFilter
from ._work import WorkResult as WorkResult
from ._work import ignore_stop_signals as ignore_stop_signals
from ._work import process_ledger as process_ledger

__all__ = [
    "BUILTIN",
    "ContractDataProcessor",
    "LedgerProcessor",
    "ProcessResult",
    "RowFilter",
    "TtlProcessor",
    "WorkResult",
    "describe",
    "load_processor",
    "process_ledger",
]
