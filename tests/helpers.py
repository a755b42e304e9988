"""Small picklable processors and helpers shared by the tests."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Sequence

import attrs

from cdp.extract._ledger import Ledger
from cdp.extract._rows import Row


@attrs.frozen
class SequenceProcessor:
    """One row per ledger naming it, after a deterministic random delay (to scramble completion order)."""

    max_delay_s: float = 0.0
    fail_on: frozenset[int] = frozenset()
    name: str = "sequence"

    def process(self, ledger: Ledger) -> Sequence[Row]:
        if ledger.sequence in self.fail_on:
            raise ValueError(f"refusing ledger {ledger.sequence}")
        if self.max_delay_s:
            time.sleep(random.Random(ledger.sequence).uniform(0, self.max_delay_s))
        return [{"ledger_sequence": ledger.sequence, "bytes": len(ledger.raw)}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
