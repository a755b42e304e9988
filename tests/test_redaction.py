"""Passwords never reach a message, a log line, ``/health`` or a path."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from cdp._config import Config
from cdp._errors import ConfigError, redact
from cdp.ops._http import _redacted
from cdp.ops._logs import JsonFormatter, TextFormatter

from .helpers import CDP, ROOT


@pytest.mark.parametrize(("text", "shown"), [
    ("OUTPUT=postgresql+psycopg://bob:S3cret@db:5432/x failed", "OUTPUT=postgresql+psycopg://bob:***@db:5432/x failed"),
    ("postgresql://bob@db/x", "postgresql://bob@db/x"),
    ("host=db password=S3cret user=bob", "host=db password=*** user=bob"),
    ("https://user:p@ss@host/x and s3://bucket/key", "https://user:***@host/x and s3://bucket/key"),
])  # fmt: skip
def test_redact(text: str, shown: str) -> None:
    assert shown == redact(text)


def test_errors_logs_and_health_hold_no_password() -> None:
    assert "S3cret" not in str(ConfigError("OUTPUT=postgresql://bob:S3cret@db/x: no"))
    record = logging.LogRecord(
        "cdp.sink", logging.WARNING, "", 0, "failed dsn=%s", ("postgresql://b:S3cret@h/d",), None
    )
    assert "S3cret" not in TextFormatter().format(record)
    assert "S3cret" not in JsonFormatter().format(record)
    assert {"sink": {"last_error": "postgresql://b:***@h/d"}} == _redacted(
        {"sink": {"last_error": "postgresql://b:S3cret@h/d"}}
    )


def test_a_dsn_is_postgres_output_whatever_its_driver_and_never_another_format(tmp_path: Path) -> None:
    config = Config.from_mapping({"output": "postgresql+psycopg://bob:S3cret@db/x"})
    assert ("postgres", "postgresql://bob:S3cret@db/x") == (config.format, config.output)
    proc = subprocess.run([*CDP, "run", "--format", "parquet", "--output", "postgresql://bob:S3cret@127.0.0.1:1/x"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert 2 == proc.returncode
    assert "cdp: error: OUTPUT=postgresql://bob:***@127.0.0.1:1/x: a PostgreSQL connection string" in proc.stderr
    assert [] == list(tmp_path.iterdir())  # no directory named after the DSN
    unreachable = subprocess.run([*CDP, "run", "--output", "postgresql+psycopg://bob:S3cret@127.0.0.1:1/x"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert 1 == unreachable.returncode
    assert "S3cret" not in unreachable.stderr
    assert 1 == len(unreachable.stderr.strip().splitlines())
