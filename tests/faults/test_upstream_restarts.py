"""`cdp fake-source --ledgers DIR` killed and restarted mid-stream under a running `cdp run`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cdp.testing import SyntheticLedgers

from ..helpers import CDP, ROOT, FakeSourceProcess


def test_run_delivers_every_ledger_once_across_two_upstream_deaths(tmp_path: Path) -> None:
    """S..E exactly once, in order: the output equals `cdp extract` over the same files."""
    gen = SyntheticLedgers(seed=11)
    first, last = 1000, 1089
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    for seq in range(first, last + 1):
        (ledgers / f"{seq}.xdr").write_bytes(gen.ledger(seq))
    fake = FakeSourceProcess("--ledgers", str(ledgers), "--rate", "300")
    dying = fake.start("--die-after", "25")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread",
           "BACKOFF_BASE_S": "0.05", "BACKOFF_CAP_S": "0.2", "BREAKER_RESET_TIMEOUT_S": "0.5",
           "INSTANCE_EXTRAS": "false"}  # fmt: skip
    run = subprocess.Popen(
        [*CDP, "run", "--start-ledger", str(first), "--end-ledger", str(last), "--output", str(out)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # two deaths mid-stream, each restart resuming where the client left off
        assert 3 == dying.wait(timeout=60)
        assert 3 == fake.start("--die-after", "30").wait(timeout=60)
        fake.start()
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
        run.wait()
        fake.stop()
    assert 0 == run.returncode, stderr
    assert stderr.count("upstream failed kind=connection") >= 2
    clean = subprocess.run([*CDP, "extract", "--network", "testnet", str(ledgers)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True)  # fmt: skip
    assert clean.stdout == out.read_text()
