"""Fault-suite helpers: a fake upstream process with given faults, `cdp run` as users run it, and
the clean output each case is compared with, ledger by ledger."""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdp.extract._rows import ETL_FIELDS
from cdp.testing import SyntheticLedgers

from ..helpers import CDP, ROOT, FakeSourceProcess

SEED = 8


@pytest.fixture
def fake_process() -> Iterator[FakeSourceProcess]:
    """A synthetic fake upstream in its own process (seed ``SEED``); the test starts it, with its faults."""
    fake = FakeSourceProcess("--seed", str(SEED))
    yield fake
    fake.stop()


def _env(port: int, tmp: Path, first: int, last: int, **env: str) -> dict[str, str]:
    base = {"SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "WORKER_MODE": "thread",
            "OUTPUT": str(tmp / "out.jsonl"), "CHECKPOINT_PATH": str(tmp / "cp.json"), "INSTANCE_EXTRAS": "false",
            "START_LEDGER": str(first), "END_LEDGER": str(last), "BACKOFF_BASE_S": "0.05", "BACKOFF_CAP_S": "0.2",
            "BREAKER_RESET_TIMEOUT_S": "0.5"}  # fmt: skip
    return {**os.environ, **base, **env}


def run_cdp(
    port: int, tmp: Path, first: int, last: int, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`cdp run` to completion, configured through its environment as a user would."""
    return subprocess.run([*CDP, "run"], cwd=ROOT, env=_env(port, tmp, first, last, **env), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def start_cdp(port: int, tmp: Path, first: int, last: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CDP, "run"], cwd=ROOT, env=_env(port, tmp, first, last, **env), stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def clean_rows(first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """What a run without faults commits: rows per ledger, with run's default fields."""
    from cdp.extract._full import extract_rows

    gen = SyntheticLedgers(seed=SEED)
    keep = (*ETL_FIELDS, "live_until_ledger_seq")
    return {
        s: [{k: r[k] for k in keep} for r in extract_rows(gen.ledger(s), gen.passphrase)]
        for s in range(first, last + 1)
    }


def committed_rows(path: Path) -> dict[int, list[dict[str, Any]]]:
    by_ledger: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            by_ledger[row["ledger_sequence"]].append(row)
    return dict(by_ledger)


def assert_ledger_by_ledger(got: dict[int, list[dict[str, Any]]], want: dict[int, list[dict[str, Any]]]) -> None:
    for seq in sorted(set(got) | set(want)):
        assert want.get(seq, []) == got.get(seq, []), f"ledger {seq} differs from a clean run"
