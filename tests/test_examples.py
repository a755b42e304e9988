"""The examples run as documented."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

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
        [sys.executable, "examples/fake_upstream.py", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
        fake.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        _, stderr = fake.communicate(timeout=30)
        assert (0, "") == (fake.returncode, stderr)
    finally:
        fake.kill()
        fake.communicate()


def test_examples_use_only_the_public_api() -> None:
    """What users copy from must not reach into private modules (``cdp.x._y``, ``cdp._y``)."""
    private = re.compile(r"^\s*(?:from|import)\s+cdp(?:\.\w+)*\._\w+|\bcdp(?:\.\w+)*\._[a-z]\w*", re.MULTILINE)
    found = {p.name: private.findall(p.read_text()) for p in (ROOT / "examples").glob("*.py")}
    assert {name: [] for name in found} == found


def test_flight_consumer_resumes_across_restarts_of_either_side(tmp_path: Path) -> None:
    """`examples/flight_consumer.py` from ledger 2 to 150: killed (SIGKILL) and restarted once, the
    service stopped and restarted under it once; its file holds exactly the service's rows 2..150.
    The upstream stalls after 100 ledgers a connection, so the service (and the consumer) cannot
    outrun the test: the stop lands while the restarted consumer still needs ledgers."""
    import re
    import signal

    from .helpers import fake_source_process

    out, mine = tmp_path / "rows.jsonl", tmp_path / "mine.jsonl"
    with fake_source_process("--stall-after", "100") as fake:
        env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread",
               "FLIGHT_PORT": "0", "FLIGHT_HOST": "127.0.0.1", "OUTPUT": str(out),
               "CHECKPOINT_PATH": str(tmp_path / "cp.json")}  # fmt: skip

        def start_service(port: str) -> tuple[subprocess.Popen[str], int]:
            run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env={**env, "FLIGHT_PORT": port},
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
            assert run.stderr is not None
            for line in run.stderr:
                if m := re.search(r"service started .*flight_port=(\d+)", line):
                    return run, int(m[1])
            raise AssertionError("the service did not start")

        def start_consumer(port: int) -> subprocess.Popen[str]:
            cmd = [sys.executable, "examples/flight_consumer.py", f"grpc://127.0.0.1:{port}", "--start-ledger", "2",
                   "--end-ledger", "150", "--out", str(mine)]  # fmt: skip
            return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def read_until(proc: subprocess.Popen[str], ledger: int) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if (m := re.match(r"ledgers \d+\.\.(\d+):", line)) and int(m[1]) >= ledger:
                    return
            raise AssertionError(f"the consumer ended before ledger {ledger}: {proc.communicate()}")

        run, port = start_service("0")
        runs = [run]
        consumer = start_consumer(port)
        consumers = [consumer]
        try:
            read_until(consumer, 20)
            consumer.kill()
            consumer.wait()
            consumer = start_consumer(port)
            consumers.append(consumer)
            assert run.stderr is not None
            joined = 0
            for line in run.stderr:  # the restarted consumer is connected (and waits at 102 at most)
                joined += "flight client joined" in line
                if joined == 2:
                    break
            run.send_signal(signal.SIGTERM)
            assert 0 == run.wait(timeout=30)
            run, _ = start_service(str(port))
            runs.append(run)
            stdout, stderr = consumer.communicate(timeout=120)
        finally:
            for proc in (*runs, *consumers):
                proc.kill()
                proc.communicate()
    assert 0 == consumer.returncode, stderr
    assert "done: every row up to ledger 150" in stdout
    assert "service unavailable (cdp is stopping: resume from ledger" in stderr
    want = [json.loads(line) for line in out.read_text().splitlines()]
    got = [json.loads(line) for line in mine.read_text().splitlines()]
    assert [r for r in want if r["ledger_sequence"] <= 150] == got


def test_the_repository_carries_the_license_it_declares() -> None:
    """pyproject.toml says Apache-2.0; the LICENSE file is that license's text, and ships with the package."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert ("Apache-2.0", ["LICENSE"]) == (project["license"], project["license-files"])
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
