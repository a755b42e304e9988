"""Operations: the ``/health`` ``/ready`` ``/metrics`` app, Prometheus metrics, logs, progress.

Names are imported on first use (PEP 562): a command that only logs does not load the HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ServiceCollector": "cdp.ops._metrics",
    "ServiceView": "cdp.ops._http",
    "configure_logging": "cdp.ops._logs",
    "create_app": "cdp.ops._http",
    "serve_http": "cdp.ops._http",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from ._http import ServiceView as ServiceView
    from ._http import create_app as create_app
    from ._http import serve_http as serve_http
    from ._logs import configure_logging as configure_logging
    from ._metrics import ServiceCollector as ServiceCollector


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
