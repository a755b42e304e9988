"""Operations: the ``/health`` ``/ready`` ``/metrics`` app, Prometheus metrics, logs, progress."""

from ._http import ServiceView as ServiceView
from ._http import create_app as create_app
from ._http import serve_http as serve_http
from ._logs import configure_logging as configure_logging
from ._metrics import ServiceCollector as ServiceCollector

__all__ = ["ServiceCollector", "ServiceView", "configure_logging", "create_app", "serve_http"]
