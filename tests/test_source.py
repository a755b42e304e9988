"""The upstream client over real loopback gRPC against the fake source (in-process unless it must die)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio

from cdp._config import Config
from cdp._errors import UpstreamError
from cdp.extract._ledger import Ledger
from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source
from cdp.upstream._breaker import Backoff, BreakerState, CircuitBreaker
from cdp.upstream._source import LedgerSource

from .conftest import LEDGERS, needs_shared
from .helpers import FakeSourceProcess, refusing_endpoint

FAST = {
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "breaker_reset_timeout_s": 0.3,
    "connect_timeout_s": 5.0,
    "idle_timeout_s": 5.0,
}


def _config(*endpoints: str, **kw: object) -> Config:
    return Config.from_mapping({"source_endpoint": endpoints, **FAST, **kw})


async def _collect(source: LedgerSource, *, limit: int = 10_000) -> list[int]:
    send, receive = trio.open_memory_channel[Ledger](4)
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, send)
        async with receive:
            async for ledger in receive:
                got.append(ledger.sequence)
                if len(got) >= limit:
                    nursery.cancel_scope.cancel()
    return got


async def _fake(nursery: trio.Nursery, **options: object) -> str:
    port = await nursery.start(serve_fake_source, FakeSourceOptions(port=0, **options))  # type: ignore[arg-type]
    return f"127.0.0.1:{port}"


@pytest.fixture
async def loop():  # type: ignore[no-untyped-def]
    async with trio_asyncio.open_loop() as aio:
        yield aio


async def test_delivers_exact_range_in_order(loop: object) -> None:
    """start..end arrive once each, in order, and the source stops after end."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery)
            src = LedgerSource(_config(ep, start_ledger=5, end_ledger=40), 5)
            assert list(range(5, 41)) == await _collect(src)
            assert 0 == src.statistics().reconnects
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ({"duplicate": frozenset({4, 7})}, {"duplicates": 2, "reconnects": 0}),
        ({"skip": frozenset({6})}, {"gaps": 1, "reconnects": 1}),
        ({"mislabel": frozenset({5})}, {"sequence_mismatches": 1, "reconnects": 0}),
        ({"fail_after": 3}, {"reconnects": 3}),
    ],
    ids=["duplicate", "gap", "mislabel", "fail-after"],
)
async def test_faults_never_change_what_is_delivered(
    loop: object, fault: dict[str, object], check: dict[str, int]
) -> None:
    """Duplicates dropped, gaps re-requested, mislabels corrected, aborts resumed: still exactly 2..12."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery, **fault)
            src = LedgerSource(_config(ep, start_ledger=2, end_ledger=12), 2)
            assert list(range(2, 13)) == await _collect(src)
            stats = attrs.asdict(src.statistics(), recurse=False)
            assert check == {k: stats[k] for k in check}
            nursery.cancel_scope.cancel()


async def test_stall_is_detected_by_the_idle_watchdog(loop: object) -> None:
    """A silent upstream (connection kept) is dropped after idle_timeout and resumed."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery, stall_after=4)
            src = LedgerSource(_config(ep, start_ledger=2, end_ledger=10, idle_timeout_s=0.3), 2)
            start = trio.current_time()
            assert list(range(2, 11)) == await _collect(src)
            assert 2 == src.statistics().failures_by_kind["idle"]
            assert trio.current_time() - start < 5
            nursery.cancel_scope.cancel()


async def test_full_channel_is_not_a_stall(loop: object) -> None:
    """Waiting on our own full channel longer than idle_timeout does not trip the watchdog."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery)
            src = LedgerSource(_config(ep, start_ledger=2, end_ledger=8, idle_timeout_s=0.2), 2)
            send, receive = trio.open_memory_channel[Ledger](0)
            nursery.start_soon(src.run, send)
            got = []
            async with receive:
                async for ledger in receive:
                    got.append(ledger.sequence)
                    if len(got) == 2:
                        await trio.sleep(0.6)  # a slow consumer, three idle timeouts long
            assert list(range(2, 9)) == got
            assert 0 == src.statistics().reconnects
            nursery.cancel_scope.cancel()


async def test_failover_to_the_next_endpoint(loop: object) -> None:
    """A dead first endpoint is skipped; the stream resumes on the second at the same ledger."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery)
            with refusing_endpoint() as dead:
                src = LedgerSource(_config(dead, ep, start_ledger=3, end_ledger=9), 3)
                assert list(range(3, 10)) == await _collect(src)
            assert ep == src.statistics().endpoint
            assert 1 == src.statistics().failures_by_kind["connection"]
            nursery.cancel_scope.cancel()


@needs_shared
async def test_non_retriable_status_stops_with_a_clear_error(loop: object) -> None:
    """OUT_OF_RANGE is not retried: UpstreamError names the endpoint, ledger and status."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery, ledgers=(LEDGERS / "testnet-1410048.xdr", LEDGERS / "testnet-1410049.xdr"))
            src = LedgerSource(_config(ep, start_ledger=5), 5)
            send, _receive = trio.open_memory_channel[Ledger](1)
            with pytest.raises(UpstreamError, match=r"refused the stream at ledger 5: OUT_OF_RANGE"):
                await src.run(send)
            nursery.cancel_scope.cancel()


async def test_breaker_opens_then_closes_after_recovery(loop: object) -> None:
    """With the upstream down the breaker opens; once it is back a probe closes it."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            with refusing_endpoint() as down:  # held, so nothing else can take the port meanwhile
                cfg = _config(down, start_ledger=2, end_ledger=6, breaker_failure_threshold=2,
                              breaker_reset_timeout_s=0.2)  # fmt: skip
                src = LedgerSource(cfg, 2)
                send, receive = trio.open_memory_channel[Ledger](10)
                nursery.start_soon(src.run, send)
                await src.breaker.wait_state(BreakerState.OPEN)
            port = int(down.rsplit(":", 1)[1])
            await nursery.start(serve_fake_source, FakeSourceOptions(port=port))
            got = [ledger.sequence async for ledger in receive]
            assert list(range(2, 7)) == got
            stats = src.breaker.statistics()
            assert (BreakerState.CLOSED, 0) == (stats.state, stats.consecutive_failures)
            assert stats.times_opened >= 1
            nursery.cancel_scope.cancel()


async def test_breaker_state_machine(autojump_clock: trio.testing.MockClock) -> None:
    """closed -> open after N failures -> half-open after the reset timeout -> closed on success."""
    b = CircuitBreaker(threshold=3, reset_timeout=10)
    for _ in range(2):
        b.record_failure()
    assert BreakerState.CLOSED == b.state
    b.record_failure()
    assert BreakerState.OPEN == b.state
    t0 = trio.current_time()
    await b.wait_permitted()
    assert 10 == pytest.approx(trio.current_time() - t0)
    assert BreakerState.HALF_OPEN == b.state
    b.record_failure()
    assert BreakerState.OPEN == b.state
    await b.wait_permitted()
    b.record_success()
    assert BreakerState.CLOSED == b.state
    assert 2 == b.statistics().times_opened


def test_backoff_is_full_jitter_and_capped() -> None:
    """Delays stay within [0, min(cap, base*2^n)] and reset to the base."""
    import random

    bo = Backoff(1.0, 60.0, rng=random.Random(1))
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for ceiling in ceilings:
        assert 0 <= bo.next_delay() <= ceiling
    bo.reset()
    assert bo.next_delay() <= 1


@needs_shared
async def test_upstream_process_killed_twice(loop: object, tmp_path: Path) -> None:
    """The fake source dies mid-stream twice and is restarted: every ledger S..E once, in order."""
    seqs = range(1410048, 1410148)
    fake = FakeSourceProcess("--ledgers", str(LEDGERS), "--rate", "400")
    try:
        dying = await trio.to_thread.run_sync(fake.start, "--die-after", "30")
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                src = LedgerSource(_config(fake.endpoint, start_ledger=seqs[0], end_ledger=seqs[-1]), seqs[0])
                send, receive = trio.open_memory_channel[Ledger](10)

                async def upstream() -> None:
                    assert 3 == await trio.to_thread.run_sync(dying.wait)
                    assert 3 == await trio.to_thread.run_sync(fake.start("--die-after", "40").wait)
                    await trio.to_thread.run_sync(fake.start)

                nursery.start_soon(upstream)
                nursery.start_soon(src.run, send)
                got = [ledger.sequence async for ledger in receive]
                assert list(seqs) == got
                assert src.statistics().reconnects >= 2
                nursery.cancel_scope.cancel()
    finally:
        fake.stop()


async def test_a_closed_receiver_ends_the_source_quietly(loop: object) -> None:
    """When the pipeline stops reading (it failed, and reports why), the source returns, raising nothing."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            src = LedgerSource(_config(await _fake(nursery)), 2)
            send, receive = trio.open_memory_channel[Ledger](0)
            async with trio.open_nursery() as inner:
                inner.start_soon(src.run, send)
                async with receive:
                    for _ in range(3):
                        await receive.receive()
            assert 5 == src.statistics().next_sequence  # 2, 3 and 4 were taken; 5 found no reader
            nursery.cancel_scope.cancel()


async def test_a_frame_that_is_not_a_raw_ledger_is_a_counted_reconnect(loop: object) -> None:
    """A non-protobuf frame mid-stream: counted as an upstream protocol error, then a reconnect at the
    same ledger; every ledger of the range arrives once."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery, garbage=frozenset({6}))
            src = LedgerSource(_config(ep, start_ledger=2, end_ledger=12), 2)
            assert list(range(2, 13)) == await _collect(src)
            stats = src.statistics()
            assert {"protocol": 1} == stats.failures_by_kind
            assert stats.last_error is not None
            assert stats.last_error.startswith("not a RawLedger message: field 2 of 65535 bytes runs past")
            nursery.cancel_scope.cancel()


async def test_connect_max_attempts_bounds_the_retries_and_names_the_endpoints(
    loop: object, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream nothing listens at: the first failure's log line says which endpoint and that the
    breaker keeps trying; CONNECT_MAX_ATTEMPTS=3 ends the run after the third failure in a row."""
    with refusing_endpoint() as dead:
        source = LedgerSource(_config(dead, end_ledger=5, connect_max_attempts=3), 2)
        with trio.fail_after(30), pytest.raises(UpstreamError) as raised:
            await source.run(trio.open_memory_channel[Ledger](1)[0])
        failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("upstream failed")]
        caplog.clear()
        unbounded = LedgerSource(_config(dead, end_ledger=5), 2)
        with trio.move_on_after(0.5):
            await _collect(unbounded)
    last = f"the last: {dead}: ConnectionRefusedError"
    assert str(raised.value).startswith(f"upstream {dead}: 3 attempts in a row failed (CONNECT_MAX_ATTEMPTS=3); {last}")
    assert 2 == len(failures)  # the third is the error itself
    assert failures[0].endswith(
        f"; upstream {dead} is retried through the circuit breaker at most CONNECT_MAX_ATTEMPTS=3 times"
    )
    assert not failures[1].endswith("times")
    assert unbounded.statistics().reconnects > 3
    assert (
        caplog.records[0]
        .getMessage()
        .endswith(f"; upstream {dead} is retried through the circuit breaker until it answers")
    )


async def test_the_upstream_may_send_large_frames(loop: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client allows DATA frames of up to MAX_FRAME_BYTES, and a grpclib upstream sends a ledger of
    300 KB in frames over HTTP/2's default 16 KiB (each frame is parsed in Python); the socket is read
    READ_BYTES at a time; ledgers are the same."""
    import h2.connection
    import hyperframe.frame

    from cdp.upstream import _grpc
    from cdp.upstream._grpc import MAX_FRAME_BYTES, READ_BYTES

    read_sizes: list[int] = []
    allow = _grpc._tune_connection

    def noting(protocol: Any) -> None:
        allow(protocol)
        read_sizes.append(protocol.connection._transport.max_size)

    monkeypatch.setattr(_grpc, "_tune_connection", noting)

    sizes: list[int] = []
    receive = h2.connection.H2Connection._receive_frame

    def recording(self: h2.connection.H2Connection, frame: hyperframe.frame.Frame) -> object:
        if isinstance(frame, hyperframe.frame.DataFrame):
            sizes.append(len(frame.data))
        return receive(self, frame)

    monkeypatch.setattr(h2.connection.H2Connection, "_receive_frame", recording)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ep = await _fake(nursery, ledger_bytes=300_000)
            src = LedgerSource(_config(ep, start_ledger=2, end_ledger=6), 2)
            assert list(range(2, 7)) == await _collect(src)
            nursery.cancel_scope.cancel()
    assert 16_384 < max(sizes) <= MAX_FRAME_BYTES
    assert [READ_BYTES] == read_sizes


async def test_a_delivered_ledger_is_not_kept_alive_by_the_bridge_between_the_loops(loop: object) -> None:
    """trio-asyncio keeps each bridged call's arguments in a reference cycle until a garbage collection:
    with messages passed bare, every ledger received stayed in memory until then (600-700 MB over 1,000
    pubnet-sized ledgers). With the collector off, only the message in hand may be alive."""
    import gc

    from cdp.upstream._grpc import Message

    def messages_alive() -> int:
        return sum(1 for obj in gc.get_objects() if isinstance(obj, Message))

    seen: list[int] = []
    gc.collect()
    gc.disable()
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                ep = await _fake(nursery, ledger_bytes=100_000)
                src = LedgerSource(_config(ep, start_ledger=2, end_ledger=31), 2)
                send, receive = trio.open_memory_channel[Ledger](0)
                nursery.start_soon(src.run, send)
                async with receive:
                    async for ledger in receive:
                        del ledger
                        seen.append(messages_alive())
                nursery.cancel_scope.cancel()
    finally:
        gc.enable()
    assert 30 == len(seen)
    assert max(seen) <= 2, seen  # the one being judged, and the next one received meanwhile
