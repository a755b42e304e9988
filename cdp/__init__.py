"""cdp, the Contract Data Processor: Stellar ledgers in over gRPC, Soroban contract-data rows out.

The public API is what this module exports; everything else is internal.
"""

from ._version import __version__ as __version__
from .config import Config as Config
from .contract_data import extract_rows as extract_rows
from .errors import CdpError as CdpError
from .errors import ConfigError as ConfigError
from .errors import LedgerDecodeError as LedgerDecodeError
from .errors import UpstreamError as UpstreamError
from .fake_source import FakeSourceOptions as FakeSourceOptions
from .fake_source import serve_fake_source as serve_fake_source
from .pipeline import BadLedgerError as BadLedgerError
from .processor import ContractDataProcessor as ContractDataProcessor
from .processor import Ledger as Ledger
from .processor import LedgerProcessor as LedgerProcessor
from .processor import Row as Row
from .service import ServiceHandle as ServiceHandle
from .service import open_row_stream as open_row_stream
from .service import serve as serve
from .synthetic import SyntheticLedgers as SyntheticLedgers
