"""Output faults: unwritable output or checkpoint location, a full disk, a slow sink."""

from __future__ import annotations

import json
import resource
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_asyncio

import cdp
from cdp._config import Config
from cdp.extract._rows import Row
from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

from ..helpers import FakeSourceProcess
from .conftest import assert_ledger_by_ledger, clean_rows, committed_rows, run_cdp


@pytest.mark.parametrize(("setting", "name"), [("OUTPUT", "out.jsonl"), ("CHECKPOINT_PATH", "cp.json")])
def test_unwritable_output_or_checkpoint_is_one_clear_line(
    fake_process: FakeSourceProcess, tmp_path: Path, setting: str, name: str
) -> None:
    """A path under a regular file: exit 1 at start, before any ledger, with one line naming the setting,
    the path and the reason."""
    fake_process.start()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / name
    proc = run_cdp(fake_process.port, tmp_path, 2, 10, **{setting: str(target)})
    assert 1 == proc.returncode
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cdp: error: {setting}={target}: ")
    assert line.endswith("Not a directory")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").stat().st_size == 0


def test_disk_full_stops_cleanly_and_a_restart_completes_exactly(
    fake_process: FakeSourceProcess, tmp_path: Path
) -> None:
    """The output hits a file-size limit (as a full disk would): exit 1 naming the file and errno, the
    checkpoint on the last durable ledger; a restart with room produces a clean run's output."""
    fake_process.start()
    limit = 60_000

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes get EFBIG

    env = {"SOURCE_ENDPOINT": f"127.0.0.1:{fake_process.port}", "HEALTH_PORT": "0", "WORKER_MODE": "thread",
           "OUTPUT": str(tmp_path / "out.jsonl"), "CHECKPOINT_PATH": str(tmp_path / "cp.json"),
           "INSTANCE_EXTRAS": "false", "START_LEDGER": "2", "END_LEDGER": "80"}  # fmt: skip
    import os
    import sys

    proc = subprocess.run([sys.executable, "-m", "cdp", "run"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_file_size)  # fmt: skip
    assert 1 == proc.returncode
    assert (
        f"cdp: error: cannot write output {tmp_path / 'out.jsonl'}: File too large (errno 27)"
        == proc.stderr.strip().splitlines()[-1]
    )
    checkpoint = json.loads((tmp_path / "cp.json").read_text())
    assert checkpoint["output_offset"] <= limit
    proc = run_cdp(fake_process.port, tmp_path, 2, 80)
    assert 0 == proc.returncode, proc.stderr
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), clean_rows(2, 80))


async def test_slow_sink_slows_the_upstream_and_loses_nothing() -> None:
    """A sink slower than the upstream: ledgers stay bounded in memory (count and bytes), none dropped."""
    seen: list[int] = []
    peaks = {"queue": 0, "bytes": 0}
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake_source, FakeSourceOptions(port=0, ledger_bytes=50_000))
        cfg = Config.from_mapping({"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "worker_mode": "thread",
                                   "start_ledger": 2, "end_ledger": 81, "channel_buffer_size": 5,
                                   "max_buffered_bytes": 1024 * 1024})  # fmt: skip
        handle = None

        async def slow(seq: int, rows: Sequence[Row]) -> None:
            seen.append(seq)
            if handle is not None:
                stats = handle.view.pipeline.statistics()
                peaks["queue"] = max(peaks["queue"], stats.queue_depth)
                peaks["bytes"] = max(peaks["bytes"], stats.buffered_bytes)
            await trio.sleep(0.01)  # the sink is slow; nothing waits on this

        with trio.fail_after(60):
            handle = await nursery.start(partial(cdp.serve, cfg, on_rows=slow))
            await handle.wait_done()
        nursery.cancel_scope.cancel()
    assert list(range(2, 82)) == seen
    assert peaks["queue"] <= 5
    assert peaks["bytes"] <= 1024 * 1024 + 60_000
