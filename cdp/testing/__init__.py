"""Test doubles that play the real parts: a fake ``RawLedgerService`` and synthetic ledgers.

Names are imported on first use (PEP 562): synthetic ledgers alone do not load the fake upstream's
grpclib and trio-asyncio (which replaces asyncio's loops, and Dask then cannot start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "FakeSourceOptions": "cdp.testing._fake_source",
    "SyntheticLedgers": "cdp.testing._synthetic",
    "serve_fake_source": "cdp.testing._fake_source",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from ._fake_source import FakeSourceOptions as FakeSourceOptions
    from ._fake_source import serve_fake_source as serve_fake_source
    from ._synthetic import SyntheticLedgers as SyntheticLedgers


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
