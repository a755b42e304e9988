"""Upstream misbehaviour against `cdp run` (real processes, loopback gRPC): each case ends with the
committed output equal to a clean run's, ledger by ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..helpers import FakeSourceProcess
from .conftest import assert_ledger_by_ledger, clean_rows, committed_rows, run_cdp, start_cdp

FIRST, LAST = 2, 60


@pytest.mark.parametrize(
    ("faults", "evidence"),
    [
        (["--stall-after", "20"], "upstream failed kind=idle"),
        (["--skip", "17"], "gap in upstream stream: expected ledger 17, got 18"),
        (["--duplicate", "23"], "duplicate ledger dropped ledger=23"),
        (["--reorder", "30"], "gap in upstream stream: expected ledger 30, got 31"),
        (["--mislabel", "41"], "sequence field disagrees with the XDR header field=1041 header=41"),
        (["--fail-after", "15"], "upstream failed kind=unavailable"),
        (["--garbage", "33"], "upstream failed kind=protocol"),
    ],
    ids=["stall", "gap", "duplicate", "out-of-order", "sequence-mismatch", "abort", "non-protobuf-frame"],
)
def test_misbehaving_upstream_loses_nothing(
    fake_process: FakeSourceProcess, tmp_path: Path, faults: list[str], evidence: str
) -> None:
    """The fault is detected and logged with its numbers, and the output is a clean run's."""
    fake_process.start("--rate", "400", *faults)
    proc = run_cdp(fake_process.port, tmp_path, FIRST, LAST, IDLE_TIMEOUT_S="0.5")
    assert 0 == proc.returncode, proc.stderr
    assert evidence in proc.stderr
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), clean_rows(FIRST, LAST))


def test_upstream_killed_three_times(fake_process: FakeSourceProcess, tmp_path: Path) -> None:
    """Three process deaths mid-stream, each followed by a restart: nothing lost or repeated."""
    first = fake_process.start("--rate", "300", "--die-after", "20")
    assert fake_process.port is not None
    run = start_cdp(fake_process.port, tmp_path, FIRST, 120)
    first.wait(timeout=60)
    for die_after in (25, 30):
        fake_process.start("--rate", "300", "--die-after", str(die_after)).wait(timeout=60)
    fake_process.start("--rate", "300")
    _, stderr = run.communicate(timeout=120)
    assert 0 == run.returncode, stderr
    assert stderr.count("upstream failed kind=connection") >= 3
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), clean_rows(FIRST, 120))


@pytest.mark.parametrize("kind", ["random", "truncated", "wrong-type", "oversize"])
def test_corrupt_ledger_stops_with_a_clear_message(fake_process: FakeSourceProcess, tmp_path: Path, kind: str) -> None:
    """Default policy: exit 1 naming the ledger and why, checkpoint on the ledger before, no traceback;
    everything before it committed exactly."""
    fake_process.start("--corrupt", "25", "--corrupt-kind", kind)
    proc = run_cdp(fake_process.port, tmp_path, FIRST, LAST, MAX_LEDGER_BYTES=str(4 * 1024 * 1024))
    assert 1 == proc.returncode
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("cdp: error: ledger 25 could not be processed by contract_data: ")
    assert "Traceback" not in proc.stderr
    assert 24 == json.loads((tmp_path / "cp.json").read_text())["ledger"]
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), clean_rows(FIRST, 24))


@pytest.mark.parametrize("kind", ["random", "truncated", "wrong-type", "oversize"])
def test_corrupt_ledger_skip_policy_dead_letters_it(fake_process: FakeSourceProcess, tmp_path: Path, kind: str) -> None:
    """--on-bad-ledger=skip: the ledger is in the dead-letter file (with its bytes), all others intact."""
    fake_process.start("--corrupt", "25", "--corrupt-kind", kind)
    dead = tmp_path / "dead.jsonl"
    proc = run_cdp(fake_process.port, tmp_path, FIRST, LAST, ON_BAD_LEDGER="skip", DEAD_LETTER_PATH=str(dead),
                   MAX_LEDGER_BYTES=str(4 * 1024 * 1024))  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    (record,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert 25 == record["ledger"]
    assert record["error"]
    want = clean_rows(FIRST, LAST)
    want[25] = []
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), want)
