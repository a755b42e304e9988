"""Test doubles that play the real parts: a fake ``RawLedgerService`` and synthetic ledgers.

Names are imported on first use (PEP 562): synthetic ledgers alone do not load the fake upstream's
grpclib and trio-asyncio (which replaces asyncio's loops, and Dask then cannot start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cdp.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
