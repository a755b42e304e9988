"""Operations: /ready follows the upstream, every Prometheus series moves when it should, JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing
import trio_asyncio
from prometheus_client.parser import text_string_to_metric_families

import cdp
from cdp._config import Config
from cdp.extract._rows import Row
from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

from .conftest import ROOT
from .helpers import CDP, FakeSourceProcess

P = "contract_data_processor_"


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            out[s.name.removeprefix(P) + (f"{{{labels}}}" if labels else "")] = s.value
    return out


async def test_ready_follows_the_upstream(tmp_path: Path) -> None:
    """/ready: 503 before the first commit, 200 while streaming, 503 while the upstream is down,
    200 again after it is back; /health turns unhealthy while the breaker is open."""
    fake = FakeSourceProcess("--rate", "50")
    dying = await trio.to_thread.run_sync(fake.start, "--die-after", "20")
    try:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            cfg = Config.from_mapping({"source_endpoint": fake.endpoint, "health_port": 0, "health_host": "127.0.0.1",
                                       "worker_mode": "thread", "backoff_base_s": 0.05, "backoff_cap_s": 0.1,
                                       "breaker_failure_threshold": 2, "breaker_reset_timeout_s": 0.3})  # fmt: skip
            first_commit, checked = trio.Event(), trio.Event()

            async def hold_first_commit(sequence: int, rows: Sequence[Row]) -> None:
                first_commit.set()
                await checked.wait()

            handle = await nursery.start(partial(cdp.serve, cfg, on_rows=hold_first_commit))
            source, pipeline = handle.view.source, handle.view.pipeline
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.http_port}") as client:
                with trio.fail_after(60):
                    await first_commit.wait()  # the first ledger is being committed, not yet committed
                    assert 503 == (await client.get("/ready")).status_code
                    checked.set()
                    await pipeline.wait_committed(5)
                    assert 200 == (await client.get("/ready")).status_code
                    assert 3 == await trio.to_thread.run_sync(dying.wait)  # died after 20 ledgers
                    await source.wait_connected(False)
                    assert 503 == (await client.get("/ready")).status_code
                    await source.breaker.wait_state(cdp_breaker().OPEN)
                    health = await client.get("/health")
                    assert (503, "unhealthy") == (health.status_code, health.json()["status"])
                    assert 1 == _metrics((await client.get("/metrics")).text)["circuit_breaker_state"]
                    await trio.to_thread.run_sync(fake.start)
                    await source.wait_connected()
                    await pipeline.wait_committed(25)
                    assert 200 == (await client.get("/ready")).status_code
                    assert "healthy" == (await client.get("/health")).json()["status"]
            handle.stop()
            await handle.wait_done()
            nursery.cancel_scope.cancel()
    finally:
        fake.stop()


def cdp_breaker() -> Any:
    from cdp.upstream._breaker import BreakerState

    return BreakerState


async def test_every_series_moves(tmp_path: Path) -> None:
    """One faulty run: each series the README lists moves; counters match what was written."""
    written_rows = 0
    held, release = trio.Event(), trio.Event()

    async def on_rows(seq: int, rows: Sequence[Row]) -> None:
        nonlocal written_rows
        if seq == 30:
            held.set()
            await release.wait()  # hold the commit so the upstream fills our queue
        written_rows += len(rows)

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        options = FakeSourceOptions(port=0, duplicate=frozenset({5}), skip=frozenset({8}), corrupt=frozenset({12}),
                                    fail_after=15)  # fmt: skip
        port = await nursery.start(serve_fake_source, options)
        cfg = Config.from_mapping({"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "worker_mode": "thread",
                                   "backoff_base_s": 0.01, "backoff_cap_s": 0.02, "on_bad_ledger": "skip",
                                   "dead_letter_path": str(tmp_path / "dead.jsonl"), "include_deleted": False,
                                   "channel_buffer_size": 10})  # fmt: skip
        handle = await nursery.start(partial(cdp.serve, cfg, on_rows=on_rows))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.http_port}") as client:
            with trio.fail_after(60):
                await held.wait()
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)  # the source is stuck on a full queue
                m = _metrics((await client.get("/metrics")).text)
                rows_then = written_rows
                release.set()
        handle.stop()
        await handle.wait_done()
        nursery.cancel_scope.cancel()
    assert 1 == m["up"]
    assert 1 == m["component_healthy{component=data_source}"]
    assert m["ledgers_received_total"] >= 30
    assert m["bytes_received_total"] > 30 * 1000
    assert m["ingest_rate"] > 0
    assert 28 == m["ledgers_processed_total"]  # 2..29, one of them dead-lettered
    assert rows_then == m["contracts_found_total"]
    assert 1 == m["processing_errors_total{kind=bad_ledger}"]
    assert m["processing_errors_total{kind=upstream_unavailable}"] >= 1
    assert 1 == m["processor_errors_total{processor=contract_data}"]
    assert 1 == m["ledgers_dead_lettered_total"]
    assert 10 == m["queue_depth"]
    assert m["current_ledger"] >= 39
    assert 29 == m["last_committed_ledger"]
    assert m["reconnects_total"] >= 2
    assert 0 == m["circuit_breaker_state"]
    assert 1 == m["gaps_total"]
    assert 1 == m["duplicates_total"]
    assert m["rows_skipped_total{reason=deleted}"] >= 1
    assert 27 == m["ledger_processing_seconds_count"]  # the dead-lettered ledger has no processing time
    assert 28 == m["ledger_commit_seconds_count"]  # receipt to commit: every committed ledger
    assert m["ledger_close_lag_seconds"] >= 0


def test_json_logs_carry_fields(tmp_path: Path) -> None:
    """LOG_FORMAT=json: one JSON object per line with level, component, message and the key=value pairs."""
    env = {**os.environ, "LOG_FORMAT": "json", "WORKER_MODE": "thread", "PROGRESS_EVERY": "2"}
    proc = subprocess.run([*CDP, "demo", "--ledgers", "4"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    progress = [line for line in lines if line["msg"] == "progress"]
    assert progress
    assert {"ts", "level", "component", "msg", "ledger", "processed", "rows"} <= set(progress[0])
    assert "cdp.pipeline" == progress[0]["component"]
    connected = [line for line in lines if line["msg"] == "upstream connected"]
    assert connected
    assert "endpoint" in connected[0]
    final = [line for line in lines if line["msg"] == "service stopped"][0]
    assert {"last_committed_ledger", "processed", "rows"} <= set(final)
