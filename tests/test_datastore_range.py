"""`read_range`, the event-loop-free datastore reader of backfill tasks: what `DatastoreSource` gives
for the same range (ledgers, refusals, one-line errors), local stores read inline and others fetched
ahead by threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from cdp._errors import ConfigError, UpstreamError
from cdp.extract import Ledger
from cdp.upstream._datastore import DatastoreSource
from cdp.upstream._layout import Layout, batch_bytes
from cdp.upstream._range import read_range

from .test_datastore_source import CORRUPTIONS, GEN, DeniedFileSystem, _config, _store, flaky  # noqa: F401


def _read(config: Any, first: int, last: int, delays: list[float] | None = None) -> list[Ledger]:
    return list(read_range(config, first, last, sleep=(delays if delays is not None else []).append))


async def _source(config: Any, first: int, last: int) -> list[Ledger]:
    send, receive = trio.open_memory_channel[Ledger](0)
    got: list[Ledger] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DatastoreSource(config, first).run, send)
        async with receive:
            async for ledger in receive:
                got.append(ledger)
    return got


@pytest.mark.parametrize(("first", "last"), [(2, 40), (6, 33), (9, 9)])
async def test_the_same_ledgers_as_the_services_reader(tmp_path: Path, first: int, last: int) -> None:
    root = _store(tmp_path, 2, 40)
    config = _config(root, start_ledger=first, end_ledger=last)
    got = _read(config, first, last)
    assert [(x.sequence, x.raw) for x in got] == [(s, GEN.ledger(s)) for s in range(first, last + 1)]
    assert got == await _source(config, first, last)
    assert {x.network for x in got} == {GEN.passphrase}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_file_is_a_bad_ledger_for_each_sequence_it_should_hold(tmp_path: Path, kind: str) -> None:
    root = _store(tmp_path, 2, 20)
    damage, reason = CORRUPTIONS[kind]
    path = root / Layout(4, 2).key(9)
    path.write_bytes(damage(path.read_bytes()))
    got = _read(_config(root, end_ledger=20, max_ledger_bytes=1024 * 1024), 2, 20)
    assert [x.sequence for x in got] == list(range(2, 21))
    bad = [x for x in got if x.problem is not None]
    assert [8, 9, 10, 11] == [x.sequence for x in bad]
    assert all(reason in (x.problem or "") for x in bad)


def test_a_fifo_at_a_key_is_refused_without_opening_it(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 12)
    path = root / Layout(4, 2).key(9)
    path.unlink()
    os.mkfifo(path)
    got = _read(_config(root, end_ledger=12), 2, 12)
    assert [x.sequence for x in got if x.problem and "not a regular file (other)" in x.problem] == [8, 9, 10, 11]


def test_a_hole_and_a_short_file_are_errors_naming_the_key(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 30)
    short = Layout(4, 2).key(12)
    (root / short).write_bytes(batch_bytes([Ledger(s, None, GEN.ledger(s)) for s in (12, 13)]))
    with pytest.raises(UpstreamError, match=f"{short} ends at ledger 13, its name says it holds up to 15"):
        _read(_config(root, end_ledger=30), 2, 30)
    hole = Layout(4, 2).key(17)
    (root / hole).unlink()
    with pytest.raises(UpstreamError, match=f"{hole} is missing"):
        _read(_config(root, end_ledger=30), 16, 30)


def test_the_manifest_is_checked_as_the_service_checks_it(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 9)
    with pytest.raises(ConfigError, match="the store is for testnet, not NETWORK_PASSPHRASE=pubnet"):
        _read(_config(root, end_ledger=9, network_passphrase="pubnet"), 2, 9)


def test_fetch_failures_are_retried_with_backoff_through_prefetch_threads(
    tmp_path: Path,
    flaky: dict[str, int],  # noqa: F811
) -> None:
    root = _store(tmp_path, 2, 30)
    for sequence, failures in ((5, 1), (13, 3), (22, 2)):
        flaky[Path(Layout(4, 2).key(sequence)).name] = failures
    delays: list[float] = []
    got = _read(_config(f"flaky://{root}", end_ledger=30, datastore_prefetch_files=3), 2, 30, delays)
    assert [(x.sequence, x.raw) for x in got] == [(s, GEN.ledger(s)) for s in range(2, 31)]
    assert len(delays) == 6


def test_failures_past_connect_max_attempts_are_one_line(tmp_path: Path, flaky: dict[str, int]) -> None:  # noqa: F811
    root = _store(tmp_path, 2, 30)
    flaky[Path(Layout(4, 2).key(17)).name] = 10
    config = _config(f"flaky://{root}", end_ledger=30, connect_max_attempts=3)
    with pytest.raises(
        UpstreamError, match=r"3 attempts in a row failed \(CONNECT_MAX_ATTEMPTS=3\); the last: ledger 16"
    ):
        _read(config, 2, 30)


def test_a_denied_read_is_one_line_at_once(tmp_path: Path) -> None:
    import fsspec

    fsspec.register_implementation("denied", DeniedFileSystem, clobber=True)
    root = _store(tmp_path, 2, 9)
    delays: list[float] = []
    with pytest.raises(UpstreamError, match=r"^datastore denied://.*: PermissionError: \[Errno 13\] Access Denied"):
        _read(_config(f"denied://{root}", end_ledger=9), 2, 9, delays)
    assert delays == []


def test_stopping_early_leaves_no_fetch_behind(tmp_path: Path, flaky: dict[str, int]) -> None:  # noqa: F811
    """A task that stops at a bad ledger closes the reader: its prefetch threads are gone after."""
    import threading

    root = _store(tmp_path, 2, 40)
    reader = read_range(_config(f"flaky://{root}", end_ledger=40), 2, 40)
    assert next(reader).sequence == 2
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("cdp-fetch")]
