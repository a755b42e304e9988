"""What every ``cdp`` command shares: its exit statuses and the one-line failure."""

from __future__ import annotations

import sys
from typing import NoReturn

from cdp._errors import redact

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # a second stop signal: in-flight ledgers abandoned
EXIT_BROKEN_PIPE = 141  # what a shell reports for a filter killed by SIGPIPE


def fail(message: str, status: int) -> NoReturn:
    print(f"cdp: error: {redact(message)}", file=sys.stderr)
    raise SystemExit(status)
