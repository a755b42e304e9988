"""The pipeline on its own, over memory channels and a mock clock: order, stop, budget, bad ledgers."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from cdp._config import Config
from cdp._errors import BadLedgerError
from cdp.extract import Ledger, Row
from cdp.pipeline import Pipeline, read_checkpoint
from cdp.processors import ContractDataProcessor, LedgerProcessor, RowFilter, WorkResult, process_ledger
from cdp.sinks import CallbackSink
from cdp.testing import SyntheticLedgers

from .helpers import SequenceProcessor, WorkerKillingProcessor

RAW = b"\x00" * 64


async def random_delay(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
    """A worker that takes a different (virtual) time for every ledger, so completions come out of order."""
    await trio.sleep(random.Random(ledger.sequence).uniform(0, 1))
    return process_ledger(processor, row_filter, ledger)


async def no_delay(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
    await trio.lowlevel.checkpoint()
    return process_ledger(processor, row_filter, ledger)


def _config(**kw: Any) -> Config:
    return Config.from_mapping({"worker_count": 8, "worker_mode": "thread", **kw})


class Committed:
    """A callback sink's view: the ledgers committed, in commit order, with their rows."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.rows: dict[int, Sequence[Row]] = {}
        self.on_commit: list[Any] = []

    async def __call__(self, sequence: int, rows: Sequence[Row]) -> None:
        self.sequences.append(sequence)
        self.rows[sequence] = rows
        for hook in self.on_commit:
            hook(sequence)
        await trio.lowlevel.checkpoint()


def _pipeline(config: Config, committed: Committed, processor: LedgerProcessor | None = None, **kw: Any) -> Pipeline:
    return Pipeline(config, processor or SequenceProcessor(), CallbackSink(committed), checkpoint_path=None, **kw)


async def _feed(send: trio.MemorySendChannel[Ledger], sequences: range, size: int = len(RAW)) -> None:
    """Send the ledgers; once the pipeline stops taking them (``stop_intake``) the rest are not sent."""
    async with send:
        for seq in sequences:
            try:
                await send.send(Ledger(seq, None, b"\x00" * size))
            except trio.BrokenResourceError:
                return


async def test_commits_in_ledger_order_whatever_order_workers_finish(autojump_clock: trio.testing.MockClock) -> None:
    committed = Committed()
    pipeline = _pipeline(_config(), committed, run_work=random_delay)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 302))
        await pipeline.run(receive)
    assert list(range(2, 302)) == committed.sequences
    assert all(rows == [{"ledger_sequence": s, "bytes": len(RAW)}] for s, rows in committed.rows.items())
    stats = pipeline.statistics()
    assert (300, 300, 2 * 8, 0, 0) == (
        stats.processed,
        stats.rows,
        stats.reorder_window,
        stats.reorder_in_use,
        stats.buffered_bytes,
    )
    assert stats.finished


async def test_stop_intake_commits_in_flight_and_abandons_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    committed = Committed()
    pipeline = _pipeline(_config(channel_buffer_size=50), committed, run_work=random_delay)
    committed.on_commit.append(lambda seq: pipeline.stop_intake() if seq == 20 else None)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 1002))
        await pipeline.run(receive)
        nursery.cancel_scope.cancel()
    last = committed.sequences[-1]
    assert list(range(2, last + 1)) == committed.sequences  # a prefix: no gap, nothing after a hole
    assert 20 <= last < 20 + 2 * 8 + 1  # at most the reorder window past the stop
    assert 0 == pipeline.statistics().buffered_bytes  # queued and abandoned ledgers gave their bytes back


async def test_stop_intake_with_nothing_in_flight_returns(autojump_clock: trio.testing.MockClock) -> None:
    pipeline = _pipeline(_config(), Committed(), run_work=no_delay)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with send, trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run, receive)
        await trio.testing.wait_all_tasks_blocked()
        pipeline.stop_intake()
    assert pipeline.finished.is_set()


async def test_byte_budget_bounds_memory_and_never_stalls(autojump_clock: trio.testing.MockClock) -> None:
    """A 1 MiB budget and 300 KB ledgers: at most three held at once, and every ledger goes through."""
    committed = Committed()
    limit = 1024 * 1024
    pipeline = _pipeline(_config(max_buffered_bytes=limit, channel_buffer_size=100), committed, run_work=random_delay)
    peak = 0

    def track(_seq: int) -> None:
        nonlocal peak
        peak = max(peak, pipeline.statistics().buffered_bytes)

    committed.on_commit.append(track)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 62), 300_000)
        await pipeline.run(receive)
    assert list(range(2, 62)) == committed.sequences
    assert 3 * 300_000 == peak
    assert 0 == pipeline.budget.used


async def test_a_ledger_larger_than_the_budget_still_goes_through(autojump_clock: trio.testing.MockClock) -> None:
    committed = Committed()
    pipeline = _pipeline(_config(max_buffered_bytes=1024 * 1024), committed, run_work=no_delay)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 6), 3 * 1024 * 1024)
        await pipeline.run(receive)
    assert [2, 3, 4, 5] == committed.sequences


async def test_bad_ledger_stop_policy_names_it_and_keeps_the_checkpoint_before(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    committed = Committed()
    cp = tmp_path / "cp.json"
    pipeline = Pipeline(
        _config(),
        SequenceProcessor(fail_on=frozenset({7})),
        CallbackSink(committed),
        checkpoint_path=cp,
        run_work=random_delay,
    )
    send, receive = trio.open_memory_channel[Ledger](0)
    message = r"^ledger 7 could not be processed by sequence: ValueError: refusing ledger 7$"
    with pytest.RaisesGroup(pytest.RaisesExc(BadLedgerError, match=message), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, send, range(2, 100))
            await pipeline.run(receive)
    assert [2, 3, 4, 5, 6] == committed.sequences
    checkpoint = read_checkpoint(cp)
    assert checkpoint is not None
    assert 6 == checkpoint.ledger
    assert 1 == pipeline.statistics().errors


async def test_a_stop_with_a_full_window_is_the_bad_ledger_alone(autojump_clock: trio.testing.MockClock) -> None:
    """The dispatcher waiting for room in the window when the committer stops is stopped with it: the
    error is the bad ledger's alone, not a group with a broken channel in it."""

    async def slow_seven(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
        await trio.sleep(1 if ledger.sequence == 7 else 0)
        return process_ledger(processor, row_filter, ledger)

    pipeline = _pipeline(_config(), Committed(), SequenceProcessor(fail_on=frozenset({7})), run_work=slow_seven)
    send, receive = trio.open_memory_channel[Ledger](0)
    with pytest.RaisesGroup(pytest.RaisesExc(BadLedgerError, match="^ledger 7 "), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, send, range(2, 100))
            await pipeline.run(receive)


async def test_bad_ledger_skip_policy_dead_letters_it_and_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    committed = Committed()
    dead = tmp_path / "dead.jsonl"
    config = _config(on_bad_ledger="skip", dead_letter_path=str(dead))
    pipeline = _pipeline(config, committed, SequenceProcessor(fail_on=frozenset({7, 30})), run_work=random_delay)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 50))
        await pipeline.run(receive)
    assert list(range(2, 50)) == committed.sequences
    assert [] == committed.rows[7] == committed.rows[30]
    records = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [7, 30] == [r["ledger"] for r in records]
    assert RAW == base64.b64decode(records[0]["ledger_close_meta_xdr"])
    assert "ValueError: refusing ledger 7" == records[0]["error"]
    stats = pipeline.statistics()
    assert (2, 2) == (stats.errors, stats.dead_lettered)


async def test_a_refused_ledger_reaches_the_policy_without_a_worker(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A ledger the source refused (e.g. over MAX_LEDGER_BYTES) is a bad ledger, named with the reason."""
    committed = Committed()
    pipeline = _pipeline(_config(), committed, run_work=no_delay)
    send, receive = trio.open_memory_channel[Ledger](1)
    await send.send(Ledger(2, None, b"", problem="ledger message of 99 bytes exceeds MAX_LEDGER_BYTES=10"))
    await send.aclose()
    with pytest.RaisesGroup(pytest.RaisesExc(BadLedgerError, match="exceeds MAX_LEDGER_BYTES"), flatten_subgroups=True):
        await pipeline.run(receive)
    assert [] == committed.sequences


async def test_filters_count_what_they_drop(autojump_clock: trio.testing.MockClock) -> None:
    committed = Committed()
    pipeline = _pipeline(_config(include_deleted=False), committed, DeletingProcessor(), run_work=no_delay)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, send, range(2, 12))
        await pipeline.run(receive)
    assert {"deleted": 10} == pipeline.statistics().rows_skipped
    assert all(len(rows) == 1 for rows in committed.rows.values())


class DeletingProcessor:
    name = "deleting"

    def process(self, ledger: Ledger) -> Sequence[Row]:
        return [
            {"ledger_sequence": ledger.sequence, "deleted": False},
            {"ledger_sequence": ledger.sequence, "deleted": True},
        ]


@pytest.mark.parametrize("policy", ["stop", "skip"])
async def test_a_dead_worker_costs_a_retry_not_a_ledger(tmp_path: Path, policy: str) -> None:
    """Worker processes killed while holding ledgers 5, 9 and 14: each ledger is retried on a fresh worker
    and committed; nothing is bad, nothing is dead-lettered, whatever the policy."""
    committed = Committed()
    dead = tmp_path / "dead.jsonl"
    config = _config(worker_mode="process", worker_count=2, on_bad_ledger=policy, dead_letter_path=str(dead))
    processor = WorkerKillingProcessor(str(tmp_path), die_once=frozenset({5, 9, 14}))
    pipeline = Pipeline(config, processor, CallbackSink(committed), checkpoint_path=None)
    send, receive = trio.open_memory_channel[Ledger](0)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, send, range(2, 22))
            await pipeline.run(receive)
    assert list(range(2, 22)) == committed.sequences
    assert all(len(rows) == 1 for rows in committed.rows.values())
    stats = pipeline.statistics()
    assert (3, 0, 0) == (stats.worker_deaths, stats.errors, stats.dead_lettered)
    assert not dead.exists()


async def test_a_ledger_that_kills_every_worker_is_bad(tmp_path: Path) -> None:
    committed = Committed()
    config = _config(worker_mode="process", worker_count=2)
    processor = WorkerKillingProcessor(str(tmp_path), die_always=frozenset({6}))
    pipeline = Pipeline(config, processor, CallbackSink(committed), checkpoint_path=None)
    send, receive = trio.open_memory_channel[Ledger](0)
    message = "^ledger 6 could not be processed by worker_killing: WorkerDied: worker process died 3 times on this"
    with (
        trio.fail_after(120),
        pytest.RaisesGroup(pytest.RaisesExc(BadLedgerError, match=message), flatten_subgroups=True),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, send, range(2, 12))
            await pipeline.run(receive)
    assert [2, 3, 4, 5] == committed.sequences


def _deeply_nested_ledger(depth: int) -> bytes:
    """A ledger whose contract-data value is ``depth`` nested one-element vecs (built as bytes: stellar-sdk
    cannot encode that deep)."""
    from stellar_sdk import xdr

    from cdp.testing._build import contract_data_entry, created, sym

    gen = SyntheticLedgers(seed=1)
    placeholder = sym("PLACEHOLDERX")
    entry = contract_data_entry(500, b"\x05" * 32, sym("k"), placeholder, xdr.ContractDataDurability.PERSISTENT)
    raw = gen.assemble(500, 2, [(b"\x01" * 32, [], [created(entry)])], None).to_xdr_bytes()
    nested = b"\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00\x01" * depth + b"\x00\x00\x00\x01"
    return raw.replace(placeholder.to_xdr_bytes(), nested)


async def test_a_deeply_nested_scval_is_the_decoders_error_in_a_worker_process(tmp_path: Path) -> None:
    """10,000 nested vecs: the ledger is refused with the decoder's own message, not a pickling failure."""
    dead = tmp_path / "dead.jsonl"
    config = _config(worker_mode="process", worker_count=1, on_bad_ledger="skip", dead_letter_path=str(dead))
    processor = ContractDataProcessor(SyntheticLedgers(seed=1).passphrase)
    pipeline = Pipeline(config, processor, CallbackSink(Committed()), checkpoint_path=None)
    send, receive = trio.open_memory_channel[Ledger](1)
    await send.send(Ledger(500, None, _deeply_nested_ledger(10_000)))
    await send.aclose()
    with trio.fail_after(120):
        await pipeline.run(receive)
    error = json.loads(dead.read_text())["error"]
    assert error.startswith("LedgerDecodeError: not a valid LedgerCloseMeta at byte "), error


def test_auto_worker_mode_picks_threads_only_for_the_compiled_extractor() -> None:
    from cdp.pipeline._workers import worker_mode
    from cdp.processors import ContractDataProcessor, TtlProcessor
    from cdp.xdr._walker import WALKER

    auto = _config(worker_mode="auto")
    compiled = "thread" if WALKER == "compiled" else "process"
    assert compiled == worker_mode(auto, ContractDataProcessor("x"))
    assert "process" == worker_mode(auto, ContractDataProcessor("x", fast=False))
    assert "process" == worker_mode(auto, TtlProcessor())
    assert "process" == worker_mode(_config(worker_mode="process"), ContractDataProcessor("x"))
    assert "thread" == worker_mode(_config(worker_mode="thread"), TtlProcessor())
