"""Extraction: pure functions from ledger bytes to rows.

This layer does no I/O of its own and imports no Trio, asyncio, grpclib, HTTP or metrics code
(a test holds it to that), so worker processes, notebooks and batch jobs can use it alone.
"""

from ._fast import extract_rows_fast as extract_rows_fast
from ._full import extract_rows as extract_rows
from ._ledger import Ledger as Ledger
from ._rows import CHANGE_FIELDS as CHANGE_FIELDS
from ._rows import ETL_FIELDS as ETL_FIELDS
from ._rows import INSTANCE_FIELDS as INSTANCE_FIELDS
from ._rows import ROW_FIELDS as ROW_FIELDS
from ._rows import ContractDataRow as ContractDataRow
from ._rows import Mode as Mode
from ._rows import Row as Row
from ._rows import TtlRow as TtlRow
from ._rows import field_types as field_types
from ._rows import row_fields as row_fields

__all__ = [
    "CHANGE_FIELDS",
    "ETL_FIELDS",
    "INSTANCE_FIELDS",
    "ROW_FIELDS",
    "ContractDataRow",
    "Ledger",
    "Mode",
    "Row",
    "TtlRow",
    "extract_rows",
    "extract_rows_fast",
    "field_types",
    "row_fields",
]
