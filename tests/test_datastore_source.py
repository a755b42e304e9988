"""`cdp run` fed from a local galexie datastore: ranges, holes, manifests, corrupt files, following live."""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import attrs
import fsspec
import pytest
import trio
import zstandard
from fsspec.implementations.local import LocalFileSystem

import cdp
from cdp._config import Config
from cdp._errors import BadLedgerError, ConfigError, UpstreamError
from cdp.extract import Ledger, Row, extract_rows
from cdp.testing import SyntheticLedgers
from cdp.upstream import BreakerState
from cdp.upstream._layout import MANIFEST, Layout, Manifest, batch_bytes, write_store

GEN = SyntheticLedgers(seed=12)


def _store(root: Path, first: int, last: int, layout: Layout | None = None) -> Path:
    ledgers = [Ledger(s, None, GEN.ledger(s)) for s in range(first, last + 1)]
    write_store(root, Manifest(GEN.passphrase, layout or Layout(4, 2)), ledgers)
    return root


def _config(root: Path | str, **kw: Any) -> Config:
    values = {"datastore_url": str(root), "health_port": 0, "health_host": "127.0.0.1", "worker_mode": "thread",
              "instance_extras": False, "datastore_poll_interval_s": 0.02, "backoff_base_s": 0.01, **kw}  # fmt: skip
    return Config.from_mapping(values)


async def _run(config: Config) -> dict[int, Sequence[Row]]:
    got: dict[int, Sequence[Row]] = {}
    with trio.fail_after(60):
        await cdp.serve(config, on_rows=lambda seq, rows: got.__setitem__(seq, rows))
    return got


def _expected(first: int, last: int, mode: str = "compact") -> dict[int, list[Any]]:
    rows = {s: extract_rows(GEN.ledger(s), GEN.passphrase, mode) for s in range(first, last + 1)}
    for batch in rows.values():
        for row in batch:
            del row["contract_instance_type"], row["contract_instance_wasm_hash"]  # type: ignore[misc]
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize("mode", ["compact", "changes"])
async def test_an_unaligned_range_is_delivered_whole_including_its_last_file(tmp_path: Path, mode: str) -> None:
    root = _store(tmp_path, 2, 40)
    assert _expected(6, 33, mode) == await _run(_config(root, start_ledger=6, end_ledger=33, mode=mode))


async def test_a_pre_v23_store_with_zstd_suffixes_reads_the_same(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 13)
    for path in root.rglob("*.xdr.zst"):
        path.rename(path.with_name(path.name.removesuffix(".zst") + ".zstd"))
    assert _expected(2, 13) == await _run(_config(root, start_ledger=2, end_ledger=13))


@pytest.mark.parametrize("missing", [17, 13])  # the first, the second file of a fetch of two
async def test_a_hole_in_a_bounded_range_is_an_error_naming_the_key(tmp_path: Path, missing: int) -> None:
    root = _store(tmp_path, 2, 30)
    hole = Layout(4, 2).key(missing)
    (root / hole).unlink()
    with pytest.raises(UpstreamError, match=f"{hole} is missing"):
        await _run(_config(root, start_ledger=2, end_ledger=30))


async def test_a_missing_first_file_is_that_one_error_while_later_files_wait_to_be_scheduled(tmp_path: Path) -> None:
    """The scheduler waiting for room behind the failed file stops quietly: the error is the hole alone,
    not an exception group with the scheduler's broken channel in it (seen with a range before the store)."""
    root = _store(tmp_path, 20, 100, Layout(1, 64))
    for _ in range(10):
        with pytest.raises(UpstreamError, match=f"{Layout(1, 64).key(2)} is missing"):
            await _run(_config(root, start_ledger=2, end_ledger=100))


async def test_a_file_short_of_what_its_name_promises_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 30)
    key = Layout(4, 2).key(12)
    (root / key).write_bytes(batch_bytes([Ledger(s, None, GEN.ledger(s)) for s in (12, 13)]))
    with pytest.raises(UpstreamError, match=f"{key} ends at ledger 13, its name says it holds up to 15"):
        await _run(_config(root, start_ledger=2, end_ledger=30))


async def test_manifest_checks(tmp_path: Path) -> None:
    root = _store(tmp_path, 2, 9)
    with pytest.raises(ConfigError, match="the store is for testnet, not NETWORK_PASSPHRASE=pubnet"):
        await _run(_config(root, end_ledger=9, network_passphrase="pubnet"))
    with pytest.raises(ConfigError, match="the manifest says 4 ledgers per file and 2 files per partition"):
        await _run(_config(root, end_ledger=9, datastore_ledgers_per_file=1, datastore_files_per_partition=1))
    (root / MANIFEST).unlink()
    with pytest.raises(ConfigError, match="no .config.json; give the layout"):
        await _run(_config(root, end_ledger=9))
    got = await _run(_config(root, end_ledger=9, datastore_ledgers_per_file=4, datastore_files_per_partition=2))
    assert _expected(2, 9) == got


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bomb(_: bytes) -> bytes:
    """Four ledgers' header, then far more zeros than four ledgers may take, in a frame of unknown size."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as writer:
        writer.write(struct.pack(">III", 8, 11, 4))
        zeros = bytes(1 << 20)
        for _ in range(300):
            writer.write(zeros)
    return out.getvalue()


def _not_a_batch(_: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(struct.pack(">III", 8, 11, 4) + bytes(64))


CORRUPTIONS = {
    "not-zstd": (lambda _: b"\x28\xb5\x2f\xfd not really zstd", "not a zstd file"),
    "truncated": (_truncated, "not a zstd file"),
    "zip-bomb": (_bomb, "decompresses to more than"),
    "not-a-batch": (_not_a_batch, "not a LedgerCloseMetaBatch"),
    "trailing-bytes": (lambda data: data + bytes(100_000), "100000 bytes after the zstd frame"),
}


@pytest.mark.parametrize("policy", ["stop", "skip"])
@pytest.mark.parametrize("kind", CORRUPTIONS)
async def test_a_corrupt_file_is_a_bad_ledger_under_the_policy(tmp_path: Path, policy: str, kind: str) -> None:
    """Each ledger the file should hold is refused, with the reason, under ON_BAD_LEDGER; nothing else is lost."""
    root = _store(tmp_path, 2, 20)
    damage, reason = CORRUPTIONS[kind]
    path = root / Layout(4, 2).key(9)
    path.write_bytes(damage(path.read_bytes()))
    config = _config(root, end_ledger=20, on_bad_ledger=policy, dead_letter_path=str(tmp_path / "dead.jsonl"),
                     max_ledger_bytes=1024 * 1024)  # fmt: skip
    if policy == "stop":
        with pytest.raises(BadLedgerError, match=f"^ledger 8 could not be processed by contract_data: .*{reason}"):
            await _run(config)
        return
    got = await _run(config)
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [8, 9, 10, 11] == [d["ledger"] for d in dead]
    assert all(reason in d["error"] for d in dead), dead
    assert {s: r for s, r in _expected(2, 20).items() if not 8 <= s <= 11} == {s: r for s, r in got.items() if r}


async def test_following_the_store_live_commits_files_as_they_appear(tmp_path: Path) -> None:
    """Without END_LEDGER the source waits at the end of the store and picks up files galexie adds."""
    root = _store(tmp_path, 2, 9, Layout(1, 1))
    committed: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, _config(root, start_ledger=2),
                                                 on_rows=lambda seq, rows: committed.append(seq)))  # fmt: skip
            await handle.view.pipeline.wait_committed(9)
            assert handle.view.source.statistics().connected
            _store(root, 10, 12, Layout(1, 1))  # galexie writes three more files
            await handle.view.pipeline.wait_committed(12)
            handle.stop()
    assert list(range(2, 13)) == committed


class FlakyFileSystem(LocalFileSystem):
    """A local store whose reads fail as a flaky network would: ``plan`` maps a key's name to how many
    reads of it raise ConnectionResetError before one succeeds."""

    protocol = "flaky"
    plan: ClassVar[dict[str, int]] = {}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def cat_file(self, path: Any, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        name = Path(path).name
        if self.plan.get(name, 0) > 0:
            self.plan[name] -= 1
            raise ConnectionResetError(f"connection reset reading {name}")
        return super().cat_file(path, start, end, **kwargs)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(FlakyFileSystem, "plan", {})
    return FlakyFileSystem.plan


async def test_fetch_failures_are_retried_with_backoff_and_counted(tmp_path: Path, flaky: dict[str, int]) -> None:
    root = _store(tmp_path, 2, 30)
    for sequence, failures in ((5, 1), (13, 3), (22, 2)):
        flaky[Path(Layout(4, 2).key(sequence)).name] = failures
    config = _config(f"flaky://{root}", start_ledger=2, end_ledger=30)
    got: dict[int, Sequence[Row]] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, config, on_rows=lambda s, r: got.__setitem__(s, r)))
        stats = handle.view.source.statistics()
    assert _expected(2, 30) == got
    assert 6 == stats.reconnects == stats.failures_by_kind["fetch"]
    assert stats.last_error is not None
    assert "ConnectionResetError" in stats.last_error


async def test_an_outage_longer_than_the_breaker_allows_is_ridden_out(tmp_path: Path, flaky: dict[str, int]) -> None:
    """A file failing 30 times in a row (any transport error, as an unreachable upstream would): the
    breaker opens, the source is not ready meanwhile, and the run ends exact once it reads again."""
    root = _store(tmp_path, 2, 30)
    flaky[Path(Layout(4, 2).key(17)).name] = 30
    config = _config(f"flaky://{root}", start_ledger=2, end_ledger=30, backoff_cap_s=0.02,
                     breaker_failure_threshold=5, breaker_reset_timeout_s=0.05)  # fmt: skip
    got: dict[int, Sequence[Row]] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, config, on_rows=lambda s, r: got.__setitem__(s, r)))
            await handle.view.source.breaker.wait_state(BreakerState.OPEN)
            assert not handle.view.source.statistics().connected
        stats = handle.view.source.statistics()
    assert _expected(2, 30) == got
    assert 30 == stats.failures_by_kind["fetch"]
    assert stats.breaker.state == BreakerState.CLOSED


class DeniedFileSystem(LocalFileSystem):
    protocol = "denied"

    def cat_file(self, path: Any, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        if Path(path).name == MANIFEST:
            return super().cat_file(str(path).removeprefix("denied://"), start, end, **kwargs)
        raise PermissionError(13, "Access Denied", str(path))


async def test_a_denied_read_is_one_line_at_once(tmp_path: Path) -> None:
    """Credentials or access: retrying cannot fix it, so it is an error naming the store, not a retry."""
    fsspec.register_implementation("denied", DeniedFileSystem, clobber=True)
    root = _store(tmp_path, 2, 9)
    with pytest.raises(UpstreamError, match=r"^datastore denied://.*: PermissionError: \[Errno 13\] Access Denied"):
        await _run(_config(f"denied://{root}", start_ledger=2, end_ledger=9))


async def test_the_fake_upstream_serves_a_store_and_follows_it_as_it_grows(tmp_path: Path, upstream: Any) -> None:
    """`cdp fake-source --datastore` plays the real upstream: a gRPC stream read out of a store, from a
    start inside a file, waiting at the store's end for the files galexie adds."""
    root = _store(tmp_path, 2, 23)  # whole files, as galexie writes them
    endpoint = await upstream(datastore=str(root), poll_interval=0.02)
    config = _config(root, datastore_url="", source_endpoint=endpoint, start_ledger=7)
    got: dict[int, Sequence[Row]] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, config, on_rows=lambda s, r: got.__setitem__(s, r)))
            await handle.view.pipeline.wait_committed(23)
            _store(root, 24, 35)
            await handle.view.pipeline.wait_committed(35)
            handle.stop()
    assert _expected(7, 35) == got


async def test_following_a_store_holds_a_bounded_number_of_files(tmp_path: Path) -> None:
    """Memory stays bounded however long the store is followed: files already handed on are let go
    (each used to stay linked to the next one, for as long as the run lasted)."""
    import gc

    from cdp.upstream._datastore import _File

    root = _store(tmp_path, 2, 301, Layout(1, 1))
    config = _config(root, start_ledger=2, datastore_prefetch_files=4)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, config, on_rows=lambda seq, rows: None))
            await handle.view.pipeline.wait_committed(301)
            gc.collect()
            alive = sum(isinstance(o, _File) for o in gc.get_objects())
            handle.stop()
    assert alive <= 4 + 3  # in the channel, one being queued, one being handed on, the newest


def _two_gib(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(2 << 30)  # sparse: nothing is written, reading it would take 2 GiB


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(("damage", "reason"), [
    (_two_gib, "2147483648 bytes, over the"), (_dev_zero, "not a regular file (other)"),
    (_fifo, "not a regular file (other)"),
])  # fmt: skip
@pytest.mark.parametrize("first", [8, 12])  # the first, the second file of a fetch of two
async def test_an_object_too_large_or_not_a_file_is_a_bad_ledger_never_read(
    tmp_path: Path, damage: Any, reason: str, first: int
) -> None:
    """A 2 GiB object, a symlink to /dev/zero, a FIFO at a store key: refused before a byte is read
    (memory stays flat, nothing blocks), each of its ledgers a bad ledger under the policy."""
    root = _store(tmp_path, 2, 20)
    damage(root / Layout(4, 2).key(first))
    config = _config(root, end_ledger=20, on_bad_ledger="skip", dead_letter_path=str(tmp_path / "dead.jsonl"),
                     max_ledger_bytes=1024 * 1024)  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = await _run(config)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: far below 2 GiB
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert list(range(first, first + 4)) == [d["ledger"] for d in dead]
    assert all(reason in d["error"] for d in dead), dead
    expected = {s: r for s, r in _expected(2, 20).items() if not first <= s < first + 4}
    assert expected == {s: r for s, r in got.items() if r}


async def test_prepare_runs_on_each_good_ledger_in_the_fetching_thread_with_the_network(tmp_path: Path) -> None:
    """What ``prepare`` returns is what is handed on, in order; it runs off the event loop's thread, on a
    ledger carrying the network in force, and never on a refused one."""
    from cdp.upstream import DatastoreSource

    root = _store(tmp_path, 2, 30)
    (root / Layout(4, 2).key(13)).write_bytes(b"not zstd")
    seen: list[tuple[int, str | None, bool]] = []
    loop_thread = threading.get_ident()

    def prepare(ledger: Ledger) -> Ledger:
        seen.append((ledger.sequence, ledger.network, threading.get_ident() != loop_thread))
        return attrs.evolve(ledger, close_time=-ledger.sequence)

    source = DatastoreSource(_config(root, start_ledger=3, end_ledger=29), 3, prepare=prepare)
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, send)
        got = [ledger async for ledger in receive]
    assert list(range(3, 30)) == [ledger.sequence for ledger in got]
    refused = set(range(12, 16))
    assert all((ledger.problem is not None) == (ledger.sequence in refused) for ledger in got)
    assert all(ledger.close_time == -ledger.sequence for ledger in got if ledger.sequence not in refused)
    assert all(network == GEN.passphrase and off_loop for _, network, off_loop in seen)
    assert set(range(3, 30)) - refused == {s for s, _, _ in seen}  # not the files' ledgers outside the range


class StallingFileSystem(LocalFileSystem):
    """A local store whose batch reads block until ``release`` is set (a store that stopped answering)."""

    protocol = "stalling"
    reading: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("stalling://"))

    def cat_file(self, path: Any, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        if Path(path).name != MANIFEST:
            self.reading.set()
            self.release.wait()
        return super().cat_file(path, start, end, **kwargs)


async def test_health_names_a_read_stuck_past_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read in flight shows its age (`call_seconds`); past DATASTORE_TIMEOUT_S the source is unhealthy,
    saying so, and the service degraded; once the store answers, all is well and nothing is lost."""
    import cdp.upstream._datastore as datastore

    fsspec.register_implementation("stalling", StallingFileSystem, clobber=True)
    StallingFileSystem.reading.clear()
    StallingFileSystem.release.clear()
    now = [1000.0]
    monkeypatch.setattr(datastore, "time", SimpleNamespace(monotonic=lambda: now[0]))
    root = _store(tmp_path, 2, 9)
    got: dict[int, Sequence[Row]] = {}
    config = _config(f"stalling://{root}", start_ledger=2, end_ledger=9, datastore_timeout_s=30)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(cdp.serve, config, on_rows=lambda s, r: got.__setitem__(s, r)))
            await trio.to_thread.run_sync(StallingFileSystem.reading.wait)
            now[0] += 10
            _, components = handle.view.health()
            assert (True, 10) == (components["data_source"]["healthy"],
                                  components["data_source"]["metrics"]["call_seconds"])  # fmt: skip
            now[0] += 25
            status, components = handle.view.health()
            assert ("degraded", False) == (status, components["data_source"]["healthy"])
            assert "a read has been running 35s, past DATASTORE_TIMEOUT_S" == components["data_source"]["last_error"]
            StallingFileSystem.release.set()
    assert _expected(2, 9) == got
