"""`cdp run` killed with SIGKILL at random moments, or stopped with SIGTERM, then restarted from its
checkpoint: the output file equals a clean run's byte for byte."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdp.extract import Ledger
from cdp.extract._rows import ETL_FIELDS
from cdp.sinks import dumps_row
from cdp.testing import SyntheticLedgers
from cdp.upstream._layout import Layout, Manifest, write_store

from ..helpers import CDP, ROOT, fake_source_process

FIRST, LAST = 2, 160


@pytest.fixture
def upstream_port() -> Iterator[int]:
    """A synthetic fake source in its own process, rate-limited so kills land mid-stream."""
    with fake_source_process("--seed", "5", "--rate", "150") as fake:
        assert fake.port is not None
        yield fake.port


def _clean_output(gen: SyntheticLedgers | None = None) -> str:
    from cdp.extract._full import extract_rows

    gen = gen or SyntheticLedgers(seed=5)
    keep = (*ETL_FIELDS, "live_until_ledger_seq")
    return "".join(
        dumps_row({k: r[k] for k in keep}) + "\n"
        for s in range(FIRST, LAST + 1)
        for r in extract_rows(gen.ledger(s), gen.passphrase)
    )


def _run(
    port: int | None, tmp: Path, worker_mode: str = "thread", new_group: bool = False, **env: str
) -> subprocess.Popen[str]:
    source = {"SOURCE_ENDPOINT": f"127.0.0.1:{port}"} if port else {}
    env = {**os.environ, **source, "HEALTH_PORT": "0", "WORKER_MODE": worker_mode,
           "CHECKPOINT_PATH": str(tmp / "cp.json"), "OUTPUT": str(tmp / "out.jsonl"), "PROGRESS_EVERY": "1",
           "INSTANCE_EXTRAS": "false", "START_LEDGER": str(FIRST), "END_LEDGER": str(LAST),
           "BACKOFF_BASE_S": "0.05", **env}  # fmt: skip
    return subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_group)  # fmt: skip


def _wait_line(proc: subprocess.Popen[str], text: str) -> bool:
    assert proc.stderr is not None
    return any(text in line for line in proc.stderr)


def _wait_commits(proc: subprocess.Popen[str], commits: int) -> bool:
    """Read progress lines until ``commits`` more ledgers are committed; False if the run ended."""
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if "progress ledger=" in line:
            seen += 1
            if seen >= commits:
                return True
    return False


def test_sigkill_five_times_then_resume_equals_a_clean_run(upstream_port: int, tmp_path: Path) -> None:
    """Five SIGKILLs after a random number of commits each; the final file equals a clean run's."""
    rng = random.Random(20261126)
    for _ in range(5):
        proc = _run(upstream_port, tmp_path)
        if _wait_commits(proc, rng.randint(3, 25)):
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    proc = _run(upstream_port, tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert 0 == proc.returncode, stderr
    assert _clean_output() == (tmp_path / "out.jsonl").read_text()


def test_sigkill_while_following_a_datastore_then_resume_equals_a_clean_run(tmp_path: Path) -> None:
    """`cdp run --datastore-url` following a store live (no END_LEDGER): killed while galexie is still
    adding files, restarted each time from the checkpoint; the file finally equals a clean run's."""
    gen = SyntheticLedgers(seed=6)
    store, layout = tmp_path / "store", Layout(4, 2)
    live = {"DATASTORE_URL": str(store), "DATASTORE_POLL_INTERVAL_S": "0.05", "END_LEDGER": "0",
            "NETWORK_PASSPHRASE": gen.passphrase}  # fmt: skip
    rng = random.Random(20261128)
    written = FIRST
    for _ in range(4):
        upto = layout.file_range(written + rng.randint(20, 45))[1]  # galexie writes whole files
        write_store(
            store, Manifest(gen.passphrase, layout), [Ledger(s, None, gen.ledger(s)) for s in range(written, upto + 1)]
        )
        written = upto + 1
        proc = _run(None, tmp_path, **live)
        if _wait_commits(proc, rng.randint(3, 18)):  # fewer than the 20+ ledgers the store just gained
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    write_store(
        store, Manifest(gen.passphrase, layout), [Ledger(s, None, gen.ledger(s)) for s in range(written, LAST + 1)]
    )
    proc = _run(None, tmp_path, **{**live, "END_LEDGER": str(LAST)})
    _, stderr = proc.communicate(timeout=120)
    assert 0 == proc.returncode, stderr
    assert _clean_output(gen) == (tmp_path / "out.jsonl").read_text()


def test_sigterm_exits_0_fast_and_resumes_exactly(upstream_port: int, tmp_path: Path) -> None:
    """SIGTERM mid-run: exit 0 within 5 s; a restart completes the range with nothing lost or repeated."""
    proc = _run(upstream_port, tmp_path)
    assert _wait_commits(proc, 20)
    proc.send_signal(signal.SIGTERM)
    assert 0 == proc.wait(timeout=5)
    proc.communicate()
    proc = _run(upstream_port, tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert 0 == proc.returncode, stderr
    assert "resuming from checkpoint" in stderr
    assert _clean_output() == (tmp_path / "out.jsonl").read_text()


@pytest.mark.parametrize(
    ("moment", "signum"),
    [("once-started", signal.SIGTERM), ("mid-stream", signal.SIGTERM), ("once-started", signal.SIGINT)],
    ids=["term-once-started", "term-mid-stream", "int-once-started"],
)
def test_a_stop_signal_to_the_whole_process_group_is_a_clean_stop(
    upstream_port: int, tmp_path: Path, moment: str, signum: int
) -> None:
    """`systemctl stop` / `kill -TERM -PGID` / Ctrl-C reach the worker processes too: the run exits 0,
    reports no ledger as bad, prints no traceback, and a restart completes the output exactly."""
    proc = _run(upstream_port, tmp_path, worker_mode="process", new_group=True)
    if moment == "once-started":
        assert _wait_line(proc, "service started")
    elif moment == "mid-stream":
        assert _wait_commits(proc, 20)
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=60)
    assert 0 == proc.returncode, stderr
    assert "Traceback" not in stderr
    assert "could not be processed" not in stderr
    proc = _run(upstream_port, tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert 0 == proc.returncode, stderr
    assert _clean_output() == (tmp_path / "out.jsonl").read_text()
