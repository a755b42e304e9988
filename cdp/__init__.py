"""cdp, the Contract Data Processor: Stellar ledgers in, Soroban contract-data rows out.

The public API is what this module exports; everything else is internal. Names are imported on
first use (PEP 562), so a worker process that needs only the extractor does not load the HTTP and
gRPC stacks. The layers, lowest first: ``cdp.xdr`` and ``cdp.extract`` (pure, no Trio),
``cdp.processors``, ``cdp.upstream``, ``cdp.pipeline``, ``cdp.sinks``, ``cdp.ops``, ``cdp.batch``
(backfills over Dask), and ``cdp.testing`` for the fake upstream and synthetic ledgers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

_EXPORTS: dict[str, str] = {
    "BadLedgerError": "cdp._errors",
    "CdpError": "cdp._errors",
    "ConfigError": "cdp._errors",
    "LedgerDecodeError": "cdp._errors",
    "NothingToDo": "cdp._errors",
    "OutputError": "cdp._errors",
    "UpstreamError": "cdp._errors",
    "Config": "cdp._config",
    "BackfillSummary": "cdp.batch",
    "backfill": "cdp.batch",
    "ServiceHandle": "cdp._service",
    "ServiceState": "cdp._service",
    "open_row_stream": "cdp._service",
    "serve": "cdp._service",
    "rows_from_arrow": "cdp.sinks._parquet",
    "lake_table": "cdp.sinks._lake",
    "ContractDataRow": "cdp.extract",
    "Ledger": "cdp.extract",
    "Row": "cdp.extract",
    "extract_rows": "cdp.extract",
    "extract_rows_fast": "cdp.extract",
    "ContractDataProcessor": "cdp.processors",
    "LedgerProcessor": "cdp.processors",
    "ProcessResult": "cdp.processors",
    "TtlProcessor": "cdp.processors",
    "FakeSourceOptions": "cdp.testing",
    "SyntheticLedgers": "cdp.testing",
    "serve_fake_source": "cdp.testing",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from ._config import Config as Config
    from ._errors import BadLedgerError as BadLedgerError
    from ._errors import CdpError as CdpError
    from ._errors import ConfigError as ConfigError
    from ._errors import LedgerDecodeError as LedgerDecodeError
    from ._errors import NothingToDo as NothingToDo
    from ._errors import OutputError as OutputError
    from ._errors import UpstreamError as UpstreamError
    from ._service import ServiceHandle as ServiceHandle
    from ._service import ServiceState as ServiceState
    from ._service import open_row_stream as open_row_stream
    from ._service import serve as serve
    from .batch import BackfillSummary as BackfillSummary
    from .batch import backfill as backfill
    from .extract import ContractDataRow as ContractDataRow
    from .extract import Ledger as Ledger
    from .extract import Row as Row
    from .extract import extract_rows as extract_rows
    from .extract import extract_rows_fast as extract_rows_fast
    from .processors import ContractDataProcessor as ContractDataProcessor
    from .processors import LedgerProcessor as LedgerProcessor
    from .processors import ProcessResult as ProcessResult
    from .processors import TtlProcessor as TtlProcessor
    from .sinks._lake import lake_table as lake_table
    from .sinks._parquet import rows_from_arrow as rows_from_arrow
    from .testing import FakeSourceOptions as FakeSourceOptions
    from .testing import SyntheticLedgers as SyntheticLedgers
    from .testing import serve_fake_source as serve_fake_source


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
