"""The whole service over real loopback gRPC: order, checkpoints, bad ledgers, HTTP, embedding API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import cdp
from cdp._config import Config
from cdp._errors import BadLedgerError
from cdp.extract._rows import Row

from .helpers import ROOT, SequenceProcessor

TESTNET = "Test SDF Network ; September 2015"  # the synthetic upstream's network, as the checkpoint records it

FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "health_port": 0, "health_host": "127.0.0.1"}


def _config(endpoint: str, **kw: Any) -> Config:
    return Config.from_mapping({"source_endpoint": endpoint, **FAST, **kw})


async def test_strict_order_with_random_delays(upstream: Any) -> None:
    """320 ledgers, 4 workers, random per-ledger delays: committed strictly in order, none missing."""
    ep = await upstream()
    got: list[int] = []

    def on_rows(seq: int, rows: Sequence[Row]) -> None:
        got.append(seq)
        assert [seq] == [r["ledger_sequence"] for r in rows]

    cfg = _config(ep, start_ledger=2, end_ledger=321, worker_count=4, worker_mode="thread")
    with trio.fail_after(60):
        await cdp.serve(cfg, on_rows=on_rows, processor=SequenceProcessor(max_delay_s=0.004))
    assert list(range(2, 322)) == got


async def test_worker_processes_extract_contract_data(upstream: Any) -> None:
    """The default processor in worker processes yields the same rows as extracting inline."""
    ep = await upstream(seed=5)
    batches: dict[int, list[Row]] = {}
    cfg = _config(ep, start_ledger=2, end_ledger=13, worker_count=2, worker_mode="process", instance_extras=False)
    with trio.fail_after(120):
        await cdp.serve(cfg, on_rows=lambda seq, rows: batches.__setitem__(seq, list(rows)))
    assert list(range(2, 14)) == list(batches)
    gen = cdp.SyntheticLedgers(seed=5)
    for seq, rows in batches.items():
        want = cdp.extract_rows(gen.ledger(seq), cfg.network_passphrase)
        for r in want:
            del r["contract_instance_type"], r["contract_instance_wasm_hash"]
        assert want == rows
        assert rows, "every synthetic ledger has contract data"


async def test_bad_ledger_stops_by_default_at_the_previous_checkpoint(upstream: Any, tmp_path: Path) -> None:
    """A corrupt ledger stops the service naming it; the checkpoint stays on the ledger before."""
    ep = await upstream(corrupt=frozenset({6}))
    cp = tmp_path / "cp.json"
    cfg = _config(ep, start_ledger=2, end_ledger=10, worker_mode="thread", checkpoint_path=str(cp),
                  output=str(tmp_path / "out.jsonl"))  # fmt: skip
    with (
        trio.fail_after(30),
        pytest.raises(BadLedgerError, match="ledger 6 "),  # bare, not wrapped in exception groups
    ):
        await cdp.serve(cfg)
    assert 5 == json.loads(cp.read_text())["ledger"]


async def test_bad_ledger_skip_policy_dead_letters_it(upstream: Any, tmp_path: Path) -> None:
    """With on_bad_ledger=skip the ledger lands in the dead-letter file and all others are intact."""
    ep = await upstream(corrupt=frozenset({6}))
    dead = tmp_path / "dead.jsonl"
    got: list[int] = []
    cfg = _config(ep, start_ledger=2, end_ledger=10, worker_mode="thread", on_bad_ledger="skip",
                  dead_letter_path=str(dead))  # fmt: skip
    with trio.fail_after(30):
        await cdp.serve(cfg, on_rows=lambda seq, rows: got.append(seq) if rows else None)
    assert [2, 3, 4, 5, 7, 8, 9, 10] == got
    (record,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert 6 == record["ledger"]
    assert "not a valid LedgerCloseMeta" in record["error"]
    assert record["ledger_close_meta_xdr"]


async def test_checkpoint_resume_equals_a_clean_run(upstream: Any, tmp_path: Path) -> None:
    """Stop at 9, restart to 20 from the checkpoint: the file equals one clean run to 20, byte for byte."""
    ep = await upstream(seed=9)
    out, cp = tmp_path / "out.jsonl", tmp_path / "cp.json"
    common = {"start_ledger": 2, "worker_mode": "thread", "output": str(out), "checkpoint_path": str(cp)}
    with trio.fail_after(60):
        await cdp.serve(_config(ep, end_ledger=9, **common))
        with out.open("a") as f:
            f.write('{"torn": "a row written after the checkpoint, as by a crash"')  # must be cut off
        await cdp.serve(_config(ep, end_ledger=20, **common))
        clean = tmp_path / "clean.jsonl"
        await cdp.serve(_config(ep, end_ledger=20, start_ledger=2, worker_mode="thread", output=str(clean)))
    assert clean.read_bytes() == out.read_bytes()
    assert {"ledger": 20, "output_offset": out.stat().st_size, "network": TESTNET} == json.loads(cp.read_text())
    assert 20 == json.loads(out.read_text().splitlines()[-1])["ledger_sequence"]


async def test_group_commit_when_the_disk_is_slower_than_the_ledgers(
    upstream: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk whose fsync takes 20 ms (a fault, not a wait): ledgers processed meanwhile are written and
    checkpointed together, far fewer fsyncs than ledgers, and the output and checkpoint are exact."""
    import os
    import time

    ep = await upstream(seed=9)
    calls: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.02)
        real_fsync(fd)

    out, cp, clean = tmp_path / "out.jsonl", tmp_path / "cp.json", tmp_path / "clean.jsonl"
    common = {"start_ledger": 2, "end_ledger": 61, "worker_mode": "thread"}
    with trio.fail_after(60):
        await cdp.serve(_config(ep, output=str(clean), **common))
        monkeypatch.setattr(os, "fsync", slow_fsync)
        await cdp.serve(_config(ep, output=str(out), checkpoint_path=str(cp), **common))
    assert clean.read_bytes() == out.read_bytes()
    assert {"ledger": 61, "output_offset": out.stat().st_size, "network": TESTNET} == json.loads(cp.read_text())
    assert len(calls) < 60  # one ledger at a time would be >= 3 per ledger (file, checkpoint, its directory)


async def test_http_health_ready_metrics(upstream: Any) -> None:
    """/health has the components, /ready is 200 once committing, /metrics counts what was written."""
    ep = await upstream()
    rows_seen = 0
    committed, release = trio.Event(), trio.Event()

    async def on_rows(seq: int, rows: Sequence[Row]) -> None:
        nonlocal rows_seen
        if seq == 13:  # hold the commit of 13 so the counters stand still while we read them
            committed.set()
            await release.wait()
        rows_seen += len(rows)

    async with trio.open_nursery() as nursery:
        cfg = _config(ep, start_ledger=2, worker_mode="thread")
        handle = await nursery.start(partial(cdp.serve, cfg, on_rows=on_rows))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.http_port}") as client:
            with trio.fail_after(30):
                await committed.wait()
            health = (await client.get("/health")).json()
            assert "healthy" == health["status"]
            assert {"data_source", "stream_manager", "sink"} <= set(health["components"])
            ds = health["components"]["data_source"]["metrics"]
            assert (True, "closed") == (ds["connected"], ds["breaker_state"])
            assert 12 == health["components"]["stream_manager"]["metrics"]["last_committed_ledger"]
            assert {"version", "uptime", "timestamp"} <= set(health)
            assert 200 == (await client.get("/ready")).status_code
            text = (await client.get("/metrics")).text
            rows_then = rows_seen
            release.set()
            handle.stop()
            await handle.wait_done()
        nursery.cancel_scope.cancel()
    metrics = {
        s.name + str(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    p = "contract_data_processor_"
    assert rows_then == metrics[p + "contracts_found_total[]"]
    assert 11 == metrics[p + "ledgers_processed_total[]"]
    assert 12 == metrics[p + "last_committed_ledger[]"]
    assert metrics[p + "ledgers_received_total[]"] >= 12
    assert 1 == metrics[p + "up[]"]
    assert 1 == metrics[p + "component_healthy[('component', 'data_source')]"]
    assert 11 == metrics[p + "ledger_processing_seconds_count[]"]
    assert 0 == metrics[p + "circuit_breaker_state[]"]


async def test_row_stream_iterator(upstream: Any) -> None:
    """`async with cdp.open_row_stream(config)` yields (sequence, rows) in order and stops cleanly."""
    ep = await upstream()
    seen = []
    with trio.fail_after(30):
        async with cdp.open_row_stream(_config(ep, start_ledger=2, end_ledger=6, worker_mode="thread")) as batches:
            async for seq, rows in batches:
                seen.append(seq)
                assert rows
    assert [2, 3, 4, 5, 6] == seen


async def test_health_answers_while_stopping_then_http_closes_gracefully(upstream: Any) -> None:
    """stop() with a commit in flight: /health still answers (status 200) while the pipeline drains,
    then the service closes HTTP (Hypercorn's graceful close) and finishes."""
    cfg = _config(await upstream(), worker_mode="thread", shutdown_grace_s=30)
    in_commit, release = trio.Event(), trio.Event()

    async def slow_commit(sequence: int, rows: Sequence[Row]) -> None:
        in_commit.set()
        await release.wait()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, cfg, on_rows=slow_commit))
            await in_commit.wait()
            handle.stop()
            await handle.wait_state(cdp.ServiceState.STOPPING)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.http_port}") as client:
                assert 200 == (await client.get("/health")).status_code
            release.set()
            await handle.wait_state(cdp.ServiceState.CLOSING_HTTP)
            await handle.wait_done()
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", handle.http_port)


EMBEDDING_SCRIPT = """
import sys, trio, trio_asyncio, cdp

async def main():
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        options = cdp.FakeSourceOptions(port=0, corrupt=frozenset({6}))
        port = await nursery.start(cdp.serve_fake_source, options)
        config = cdp.Config.from_mapping({"source_endpoint": f"127.0.0.1:{port}", "health_port": 0,
                                          "end_ledger": 10, "worker_mode": "thread"})
        try:
            await cdp.serve(config, on_rows=lambda sequence, rows: None)
        except cdp.BadLedgerError as exc:
            print("caught", type(exc).__name__, exc.sequence)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def test_an_embedding_script_catches_bad_ledger_error_itself() -> None:
    proc = subprocess.run([sys.executable, "-c", EMBEDDING_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    assert "caught BadLedgerError 6" == proc.stdout.strip()


async def test_row_stream_raises_a_bad_ledger_bare(upstream: Any) -> None:
    """`open_row_stream` raises what `serve` raises, unwrapped: the batches before it were delivered."""
    cfg = _config(await upstream(corrupt=frozenset({5})), start_ledger=2, end_ledger=9, worker_mode="thread")
    seen: list[int] = []

    async def consume() -> None:
        async with cdp.open_row_stream(cfg) as batches:
            async for seq, _rows in batches:
                seen.append(seq)

    with trio.fail_after(30), pytest.raises(BadLedgerError, match="^ledger 5 could not be processed"):
        await consume()
    assert [2, 3, 4] == seen
