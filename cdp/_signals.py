"""Stop signals noted from the first moment of the process, before Trio or anything heavy is loaded."""

from __future__ import annotations

import signal


class StopSignals:
    """SIGINT/SIGTERM from the very start of the process: until the service listens for them itself,
    a signal is only noted, so a stop at any moment, start-up included, is a clean exit 0."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.immediate = False  # a second signal: stop without waiting for in-flight ledgers

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
