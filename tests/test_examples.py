"""The examples run as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .helpers import CDP, ROOT


def test_embed_example_prints_rows_and_exits_0() -> None:
    """`python examples/embed.py` prints per-ledger lines and exits 0."""
    proc = subprocess.run([sys.executable, "examples/embed.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert 0 == proc.returncode, proc.stderr
    assert "ledger 11:" in proc.stdout
    assert "SAC balances" in proc.stdout


def test_fake_upstream_example_faults_lose_nothing() -> None:
    """Against the faulty example upstream, `cdp run` writes ledgers 2..60, each exactly once, in order."""
    fake = subprocess.Popen(
        [sys.executable, "examples/fake_upstream.py", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline()
        assert "fake upstream on" in line
        port = int(line.split("127.0.0.1:")[1].split(";")[0])
        env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "WORKER_MODE": "thread",
               "BACKOFF_BASE_S": "0.05", "END_LEDGER": "60"}  # fmt: skip
        proc = subprocess.run([*CDP, "run"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert 0 == proc.returncode, proc.stderr
        seqs = [json.loads(line)["ledger_sequence"] for line in proc.stdout.splitlines()]
        assert list(range(2, 61)) == sorted(set(seqs))
        assert seqs == sorted(seqs)
        assert "duplicate ledger dropped ledger=10" in proc.stderr
        assert "gap in upstream stream: expected ledger 20, got 21" in proc.stderr
        assert "sequence field disagrees" in proc.stderr
    finally:
        fake.kill()
        fake.communicate()
