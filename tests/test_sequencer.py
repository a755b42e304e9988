"""The sequencer's decisions, without sockets: deliver, duplicate, gap, header over label, refusals."""

from __future__ import annotations

from cdp.testing import SyntheticLedgers
from cdp.upstream._sequencer import Deliver, Duplicate, Gap, Sequencer

GEN = SyntheticLedgers(seed=1)
LIMIT = 64 * 1024 * 1024


def test_the_expected_ledger_is_delivered_with_its_close_time() -> None:
    seq = Sequencer(10, LIMIT)
    decision = seq.judge(10, GEN.ledger(10))
    assert isinstance(decision, Deliver)
    assert (10, None, None) == (decision.ledger.sequence, decision.ledger.problem, decision.mismatch)
    assert decision.ledger.close_time == GEN.close_time(10)
    seq.delivered(decision.ledger)
    assert 11 == seq.next


def test_an_earlier_ledger_is_a_duplicate_and_a_later_one_a_gap() -> None:
    seq = Sequencer(10, LIMIT)
    assert Duplicate(9, 10) == seq.judge(9, GEN.ledger(9))
    assert Gap(10, 12) == seq.judge(12, GEN.ledger(12))
    assert 10 == seq.next  # neither moves the stream


def test_the_header_wins_over_a_wrong_sequence_field() -> None:
    seq = Sequencer(10, LIMIT)
    decision = seq.judge(99, GEN.ledger(10))
    assert isinstance(decision, Deliver)
    assert (10, (99, 10)) == (decision.ledger.sequence, decision.mismatch)
    assert Duplicate(10, 11) == Sequencer(11, LIMIT).judge(11, GEN.ledger(10))  # a relabelled old ledger


def test_undecodable_bytes_go_on_under_their_label_for_the_worker_to_report() -> None:
    decision = Sequencer(10, LIMIT).judge(10, b"\xff" * 7)
    assert isinstance(decision, Deliver)
    assert (10, None, b"\xff" * 7) == (decision.ledger.sequence, decision.ledger.close_time, decision.ledger.raw)


def test_a_dropped_oversized_message_stands_for_the_expected_ledger() -> None:
    decision = Sequencer(10, 1024).judge(0, b"", dropped_size=5000)
    assert isinstance(decision, Deliver)
    assert 10 == decision.ledger.sequence
    assert "ledger message of 5000 bytes exceeds MAX_LEDGER_BYTES=1024" == decision.ledger.problem
