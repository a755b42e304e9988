"""What each upstream message means for the stream, decided without I/O.

Every ledger is handed downstream exactly once and in order: a message before the expected
ledger is a duplicate (dropped), one after it is a gap (reconnect at the expected ledger), and a
``sequence`` field that disagrees with the XDR header loses to the header.
"""

from __future__ import annotations

import attrs

from cdp._errors import LedgerDecodeError
from cdp.extract import Ledger
from cdp.xdr import peek_header


@attrs.frozen
class Deliver:
    ledger: Ledger
    mismatch: tuple[int, int] | None = None  # (sequence field, header) when they disagreed


@attrs.frozen
class Duplicate:
    sequence: int
    expected: int


@attrs.frozen
class Gap:
    expected: int
    got: int


Decision = Deliver | Duplicate | Gap


class Sequencer:
    """Tracks the next expected ledger and judges each message against it."""

    def __init__(self, next_sequence: int, max_ledger_bytes: int) -> None:
        self.next = next_sequence
        self.max_ledger_bytes = max_ledger_bytes

    def judge(self, label: int, raw: bytes, dropped_size: int | None = None) -> Decision:
        """``label`` is the message's ``sequence`` field; ``dropped_size`` marks a message over the limit,
        read and dropped, which stands for the expected ledger and reaches the policy as a bad one."""
        if dropped_size is not None:
            problem = f"ledger message of {dropped_size} bytes exceeds MAX_LEDGER_BYTES={self.max_ledger_bytes}"
            return Deliver(Ledger(self.next, None, b"", problem))
        sequence, close_time, mismatch = label, None, None
        try:
            facts = peek_header(raw)
        except LedgerDecodeError:
            pass  # the worker reports it with the sequence named; the label is all we have
        else:
            close_time = facts.close_time
            if facts.sequence != label:
                mismatch = (label, facts.sequence)
                sequence = facts.sequence
        if sequence < self.next:
            return Duplicate(sequence, self.next)
        if sequence > self.next:
            return Gap(self.next, sequence)
        return Deliver(Ledger(sequence, close_time, raw), mismatch)

    def delivered(self, ledger: Ledger) -> None:
        self.next = ledger.sequence + 1
