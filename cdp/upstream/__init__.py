"""The upstream: the ``RawLedgerService`` gRPC client, its sequencer and its circuit breaker."""

from ._breaker import Backoff as Backoff
from ._breaker import BreakerState as BreakerState
from ._breaker import BreakerStatistics as BreakerStatistics
from ._breaker import CircuitBreaker as CircuitBreaker
from ._datastore import DatastoreSource as DatastoreSource
from ._source import LedgerSource as LedgerSource
from ._source import SourceStatistics as SourceStatistics

__all__ = [
    "Backoff",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "DatastoreSource",
    "LedgerSource",
    "SourceStatistics",
]
