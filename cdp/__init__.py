"""cdp, the Contract Data Processor: Stellar ledgers in over gRPC, Soroban contract-data rows out.

The public API is what this module exports; everything else is internal. Names are imported on
first use, so a worker process that needs only the extractor does not load the HTTP and gRPC
stacks (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    "Config": "config",
    "extract_rows": "contract_data",
    "extract_rows_fast": "fast_path",
    "CdpError": "errors",
    "ConfigError": "errors",
    "LedgerDecodeError": "errors",
    "UpstreamError": "errors",
    "FakeSourceOptions": "fake_source",
    "serve_fake_source": "fake_source",
    "BadLedgerError": "pipeline",
    "ContractDataProcessor": "processor",
    "Ledger": "processor",
    "LedgerProcessor": "processor",
    "ProcessResult": "processor",
    "Row": "processor",
    "ServiceHandle": "service",
    "open_row_stream": "service",
    "serve": "service",
    "SyntheticLedgers": "synthetic",
    "TtlProcessor": "ttl",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .config import Config as Config
    from .contract_data import extract_rows as extract_rows
    from .errors import CdpError as CdpError
    from .errors import ConfigError as ConfigError
    from .errors import LedgerDecodeError as LedgerDecodeError
    from .errors import UpstreamError as UpstreamError
    from .fake_source import FakeSourceOptions as FakeSourceOptions
    from .fake_source import serve_fake_source as serve_fake_source
    from .fast_path import extract_rows_fast as extract_rows_fast
    from .pipeline import BadLedgerError as BadLedgerError
    from .processor import ContractDataProcessor as ContractDataProcessor
    from .processor import Ledger as Ledger
    from .processor import LedgerProcessor as LedgerProcessor
    from .processor import ProcessResult as ProcessResult
    from .processor import Row as Row
    from .service import ServiceHandle as ServiceHandle
    from .service import open_row_stream as open_row_stream
    from .service import serve as serve
    from .synthetic import SyntheticLedgers as SyntheticLedgers
    from .ttl import TtlProcessor as TtlProcessor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
