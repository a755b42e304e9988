"""Structured logs on stderr: ``key=value`` lines for people, one JSON object per line for machines.

Messages are written as ``"event text key=%s ..."``; the JSON form also lifts those pairs into fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Final

from cdp._errors import redact

_PAIR: Final = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        line = f"{ts}.{int(record.msecs):03d}Z level={level} component={record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name,
            "msg": _PAIR.split(message, maxsplit=1)[0].strip(),
        }
        for key, value in _PAIR.findall(message):
            out.setdefault(key, _scalar(value))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


def _scalar(text: str) -> object:
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route the ``cdp`` loggers to stderr (stdout carries rows)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("cdp").setLevel(level)
