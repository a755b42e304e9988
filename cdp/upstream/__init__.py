"""The upstream: the ``RawLedgerService`` gRPC client, its sequencer and circuit breaker, and the datastore.

Names are imported on first use (PEP 562): a process that reads only a datastore (a backfill
worker) does not load grpclib or trio-asyncio, whose import replaces the asyncio loop policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Backoff": "cdp.upstream._breaker",
    "BreakerState": "cdp.upstream._breaker",
    "BreakerStatistics": "cdp.upstream._breaker",
    "CircuitBreaker": "cdp.upstream._breaker",
    "DatastoreSource": "cdp.upstream._datastore",
    "LedgerSource": "cdp.upstream._source",
    "SourceStatistics": "cdp.upstream._stats",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from ._breaker import Backoff as Backoff
    from ._breaker import BreakerState as BreakerState
    from ._breaker import BreakerStatistics as BreakerStatistics
    from ._breaker import CircuitBreaker as CircuitBreaker
    from ._datastore import DatastoreSource as DatastoreSource
    from ._source import LedgerSource as LedgerSource
    from ._stats import SourceStatistics as SourceStatistics


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
