"""Where committed rows go: JSONL (file or stdout), callbacks, Parquet (the ``parquet`` extra)."""

from ._base import Capabilities as Capabilities
from ._base import Durable as Durable
from ._base import RowsCallback as RowsCallback
from ._base import Sink as Sink
from ._base import open_sink as open_sink
from ._base import sink_type as sink_type
from ._jsonl import CallbackSink as CallbackSink
from ._jsonl import JsonlFileSink as JsonlFileSink
from ._jsonl import StdoutSink as StdoutSink
from ._jsonl import dumps_row as dumps_row

__all__ = [
    "Capabilities",
    "CallbackSink",
    "Durable",
    "JsonlFileSink",
    "RowsCallback",
    "Sink",
    "StdoutSink",
    "dumps_row",
    "open_sink",
    "sink_type",
]
