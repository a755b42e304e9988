"""Arrow Flight: a real ``pyarrow.flight`` client against the running service."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import cdp
from cdp._config import Config
from cdp._service import ServiceHandle
from cdp.extract._rows import ContractDataRow

from .conftest import LEDGERS, needs_shared

flight = pytest.importorskip("pyarrow.flight", reason="pyarrow (the flight extra) is not installed")
pa = pytest.importorskip("pyarrow")

SEED = 5


@attrs.define
class Received:
    batches: list[tuple[int, int, Any]] = attrs.field(factory=list)  # (first, last, record batch)
    error: Exception | None = None

    def ranges(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b, _ in self.batches]

    def rows(self, schema: str = "full") -> list[dict[str, Any]]:
        from cdp.sinks._parquet import rows_from_table

        tables = [pa.Table.from_batches([b]) for _, _, b in self.batches]
        return [r for t in tables for r in rows_from_table(t, schema, ContractDataRow)]


def read(
    port: int,
    ticket: bytes | dict[str, Any],
    *,
    batches: int | None = None,
    after_first: Callable[[], None] | None = None,
) -> Received:
    """Read a stream to its end (or its error, or ``batches`` batches); blocking, for a thread.

    A client that pauses (``after_first``) keeps gRPC's receive window at 64 KiB (no BDP probing), so
    the server feels it within a few ledgers instead of after megabytes of buffered batches."""
    raw = ticket if isinstance(ticket, bytes) else json.dumps(ticket).encode()
    got = Received()
    options = [("grpc.http2.bdp_probe", 0)] if after_first is not None else []
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}", generic_options=options)
    try:
        reader = client.do_get(flight.Ticket(raw))
        while batches is None or len(got.batches) < batches:
            chunk = reader.read_chunk()
            meta = json.loads(chunk.app_metadata.to_pybytes())
            got.batches.append((meta["first_ledger"], meta["last_ledger"], chunk.data))
            if after_first is not None and len(got.batches) == 1:
                after_first()
    except StopIteration:
        pass
    except flight.FlightError as exc:
        got.error = exc
    finally:
        client.close()
    return got


def flight_port_of(log: Iterable[str]) -> int:
    """The Flight port a `cdp run` reports in its start-up line (it was asked for port 0)."""
    for line in log:
        if m := re.search(r"service started .*flight_port=(\d+)", line):
            return int(m[1])
    raise AssertionError("cdp run ended without reporting its Flight port")


def contiguous(ranges: list[tuple[int, int]], first: int, last: int) -> bool:
    return (
        bool(ranges)
        and ranges[0][0] == first
        and ranges[-1][1] == last
        and all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    )


def jsonl_rows(path: Path, first: int, last: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if first <= r["ledger_sequence"] <= last]


def config(endpoint: str, tmp_path: Path, **kw: Any) -> Config:
    values = {"source_endpoint": endpoint, "health_port": 0, "flight_port": 0, "flight_host": "127.0.0.1",
              "worker_mode": "thread", "start_ledger": 2, "output": str(tmp_path / "rows.jsonl"),
              "checkpoint_path": str(tmp_path / "cp.json"), **kw}  # fmt: skip
    return Config.from_mapping(values)


@asynccontextmanager
async def service(cfg: Config, **kw: Any) -> AsyncIterator[ServiceHandle]:
    async with trio.open_nursery() as nursery:
        handle: ServiceHandle = await nursery.start(lambda task_status: cdp.serve(cfg, task_status=task_status, **kw))
        yield handle
        handle.stop()
        await handle.wait_done()


async def test_flights_schemas_and_bad_requests(upstream: Any, tmp_path: Path) -> None:
    """ListFlights, GetFlightInfo and GetSchema answer with the original's path and ticket; unknown
    paths and tickets get an error that says what this server has."""
    cfg = config(await upstream(seed=SEED), tmp_path)

    def ask(port: int) -> dict[str, Any]:
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        out: dict[str, Any] = {
            "list": [(i.descriptor.path, i.endpoints[0].ticket.ticket) for i in client.list_flights()]
        }
        info = client.get_flight_info(flight.FlightDescriptor.for_path("contract", "data"))
        out["info"] = (info.schema.names, info.endpoints[0].ticket.ticket, info.total_records)
        out["schema_full"] = client.get_schema(flight.FlightDescriptor.for_path("contract", "data", "full")).schema
        for name, call in {
            "path": lambda: client.get_flight_info(flight.FlightDescriptor.for_path("contract", "events")),
            "ticket": lambda: client.do_get(flight.Ticket(b"contract-data")).read_all(),
            "key": lambda: client.do_get(flight.Ticket(b'{"start": 5}')).read_all(),
            "range": lambda: client.do_get(flight.Ticket(b'{"start_ledger": 9, "end_ledger": 3}')).read_all(),
            "filter": lambda: client.do_get(flight.Ticket(b'{"filter_durability": ["forever"]}')).read_all(),
            "schema": lambda: client.do_get(flight.Ticket(b'{"schema": "etl"}')).read_all(),
        }.items():
            with pytest.raises(flight.FlightServerError) as err:
                call()
            out[name] = str(err.value).split(". Detail:")[0]
        client.close()
        return out

    async with service(cfg) as handle:
        assert handle.flight_port is not None
        got = await trio.to_thread.run_sync(ask, handle.flight_port)
    assert [
        ([b"contract", b"data"], b"contract-data-stream"),
        ([b"contract", b"data", b"full"], b'{"schema":"full"}'),
    ] == got["list"]
    names, ticket, total = got["info"]
    assert 18 == len(names)
    assert "expiration_ledger_seq" == names[-1]
    assert b"contract-data-stream" == ticket
    assert -1 == total
    assert "key_decoded" in got["schema_full"].names
    assert got["path"].startswith("unknown flight")
    assert '["contract", "data"]' in got["path"]
    assert got["ticket"].startswith("unknown ticket b'contract-data': expected 'contract-data-stream' or a JSON object")
    assert "ticket: unknown key(s) start" == got["key"]
    assert "ticket: end_ledger=3 is before start_ledger=9" == got["range"]
    assert got["filter"].startswith("ticket: filter_durability=forever: 'forever' must be persistent or temporary")
    assert "ticket: schema='etl': this flight serves ttp or full" == got["schema"]


async def test_live_tickets_get_exactly_the_committed_rows(upstream: Any, tmp_path: Path) -> None:
    """Connected mid-stream, the original's ticket (ttp) and a live full-schema ticket both receive, in
    contiguous ledger ranges, exactly what the JSONL output holds for those ledgers; the service's
    stop ends them with an error saying where to resume."""
    cfg = config(await upstream(seed=SEED, rate=200), tmp_path)
    from cdp.sinks._parquet import ttp_table

    async with trio.open_nursery() as nursery:
        handle: ServiceHandle = await nursery.start(lambda task_status: cdp.serve(cfg, task_status=task_status))
        await handle.view.pipeline.wait_committed(10)  # type: ignore[attr-defined]
        port = handle.flight_port
        assert port is not None
        compat: list[Received] = []
        full: list[Received] = []
        async with trio.open_nursery() as readers:
            readers.start_soon(
                lambda: trio.to_thread.run_sync(lambda: compat.append(read(port, b"contract-data-stream")))
            )
            readers.start_soon(lambda: trio.to_thread.run_sync(lambda: full.append(read(port, {"schema": "full"}))))
            await handle.view.pipeline.wait_committed(60)  # type: ignore[attr-defined]
            handle.stop()
        await handle.wait_done()
    out = tmp_path / "rows.jsonl"
    for got, schema in ((compat[0], "ttp"), (full[0], "full")):
        first, last = got.ranges()[0][0], got.ranges()[-1][1]
        assert 10 < first <= 60 <= last
        assert contiguous(got.ranges(), first, last)
        assert got.error is not None
        assert f"cdp is stopping: resume from ledger {last + 1}" in str(got.error)
        expected = jsonl_rows(out, first, last)
        assert len(expected) > 100
        if schema == "full":
            assert expected == got.rows()
        else:
            assert ttp_table(expected).equals(pa.Table.from_batches([b for _, _, b in got.batches]))


async def test_start_ledger_replays_then_follows_live_exactly_once(upstream: Any, tmp_path: Path) -> None:
    """``{"start_ledger": 2}`` asked once ledger 30 is committed: the output is replayed, then live
    commits follow, up to ``end_ledger``; every row of 2..90 once, in order, and a clean end."""
    cfg = config(await upstream(seed=SEED, rate=200), tmp_path)
    async with service(cfg) as handle:
        await handle.view.pipeline.wait_committed(30)  # type: ignore[attr-defined]
        ticket = {"start_ledger": 2, "end_ledger": 90, "schema": "full"}
        got = await trio.to_thread.run_sync(read, handle.flight_port, ticket)
        stats = handle.view.flight.statistics()  # type: ignore[union-attr]
    assert got.error is None
    assert contiguous(got.ranges(), 2, 90)
    assert jsonl_rows(tmp_path / "rows.jsonl", 2, 90) == got.rows()
    assert stats.rows_sent == len(got.rows())
    assert stats.batches_sent == len(got.batches)


async def test_ticket_filters_apply(upstream: Any, tmp_path: Path) -> None:
    cfg = config(await upstream(seed=SEED), tmp_path)
    async with service(cfg) as handle:
        await handle.view.pipeline.wait_committed(20)  # type: ignore[attr-defined]
        ticket = {"start_ledger": 2, "end_ledger": 20, "schema": "full", "filter_durability": "temporary",
                  "include_deleted": False}  # fmt: skip
        got = await trio.to_thread.run_sync(read, handle.flight_port, ticket)
    every = jsonl_rows(tmp_path / "rows.jsonl", 2, 20)
    want = [r for r in every if r["contract_durability"] == "ContractDataDurabilityTemporary" and not r["deleted"]]
    assert 0 < len(want) < len(every)
    assert want == got.rows()
    assert contiguous(got.ranges(), 2, 20)


async def test_slow_client_never_stalls_the_service_and_misses_nothing(upstream: Any, tmp_path: Path) -> None:
    """Buffers of 2 ledgers: a client that stops reading after its first batch falls behind while the
    service commits 100 more ledgers at full speed beside a fast client; it then catches up from the
    output. Both receive every row of 2..120 exactly once; /health and /metrics tell the story."""
    cfg = config(await upstream(seed=SEED), tmp_path, flight_client_buffer=2)
    resume = threading.Event()
    async with service(cfg) as handle:
        port = handle.flight_port
        await handle.view.pipeline.wait_committed(5)  # type: ignore[attr-defined]
        results: dict[str, Received] = {}
        ticket = {"start_ledger": 2, "end_ledger": 120, "schema": "full"}

        async def slow() -> None:
            results["slow"] = await trio.to_thread.run_sync(
                lambda: read(port, ticket, after_first=lambda: resume.wait(60))
            )

        async def fast() -> None:
            results["fast"] = await trio.to_thread.run_sync(read, port, ticket)

        async with trio.open_nursery() as readers:
            readers.start_soon(slow)
            readers.start_soon(fast)
            await handle.view.pipeline.wait_committed(120)  # type: ignore[attr-defined]
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://127.0.0.1:{handle.http_port}/health")).json()
                metrics = (await http.get(f"http://127.0.0.1:{handle.http_port}/metrics")).text
            resume.set()
    flight_health = health["components"]["flight"]["metrics"]
    assert flight_health["clients"] >= 1
    assert flight_health["overflows"] >= 1
    assert "contract_data_processor_flight_buffer_overflows_total" in metrics
    want = jsonl_rows(tmp_path / "rows.jsonl", 2, 120)
    for name in ("slow", "fast"):
        assert results[name].error is None, name
        assert contiguous(results[name].ranges(), 2, 120), name
        assert want == results[name].rows(), name


async def test_without_retained_output_a_slow_client_is_told_where_to_resume(upstream: Any, tmp_path: Path) -> None:
    """Rows to a callback: nothing to replay from. A client more than its buffer behind is disconnected
    with an error naming the last ledger it received; a start in the past is refused."""
    cfg = config(await upstream(seed=SEED), tmp_path, flight_client_buffer=2)
    resume = threading.Event()
    seen: list[int] = []
    async with service(cfg, on_rows=lambda seq, rows: seen.append(seq)) as handle:
        port = handle.flight_port
        await handle.view.pipeline.wait_committed(5)  # type: ignore[attr-defined]
        async with trio.open_nursery() as readers:
            got: list[Received] = []
            readers.start_soon(
                lambda: trio.to_thread.run_sync(
                    lambda: got.append(read(port, b"contract-data-stream", after_first=lambda: resume.wait(60)))
                )
            )
            await handle.view.pipeline.wait_committed(60)  # type: ignore[attr-defined]
            resume.set()
        past = await trio.to_thread.run_sync(read, port, {"start_ledger": 3})
        stats = handle.view.flight.statistics()  # type: ignore[union-attr]
    last = got[0].ranges()[-1][1]
    assert isinstance(got[0].error, flight.FlightServerError)
    assert f"the last ledger you received is {last}; resume from ledger {last + 1}" in str(got[0].error)
    assert "too slow" in str(got[0].error)
    assert isinstance(past.error, flight.FlightServerError)
    assert "ledger 3 was committed before this request" in str(past.error)
    assert stats.disconnected == 2


async def test_client_disconnects_and_resumes(upstream: Any, tmp_path: Path) -> None:
    cfg = config(await upstream(seed=SEED, rate=300), tmp_path)
    async with service(cfg) as handle:
        port = handle.flight_port
        await handle.view.pipeline.wait_committed(20)  # type: ignore[attr-defined]
        ticket = {"start_ledger": 2, "end_ledger": 80, "schema": "full"}
        first = await trio.to_thread.run_sync(lambda: read(port, ticket, batches=3))
        resume_at = first.ranges()[-1][1] + 1
        second = await trio.to_thread.run_sync(read, port, {**ticket, "start_ledger": resume_at})
    assert contiguous(first.ranges() + second.ranges(), 2, 80)
    assert jsonl_rows(tmp_path / "rows.jsonl", 2, 80) == first.rows() + second.rows()


async def test_service_restarted_underneath_a_client(upstream: Any, tmp_path: Path) -> None:
    """The service stops mid-stream: the client is told where to resume; after a restart from the
    checkpoint it resumes there, and the rows of both runs are exactly the output's."""
    endpoint = await upstream(seed=SEED, rate=200)
    got: list[Received] = []
    async with service(config(endpoint, tmp_path)) as handle:
        await handle.view.pipeline.wait_committed(10)  # type: ignore[attr-defined]
        async with trio.open_nursery() as readers:
            ticket = {"start_ledger": 2, "schema": "full"}
            readers.start_soon(lambda: trio.to_thread.run_sync(lambda: got.append(read(handle.flight_port, ticket))))
            await handle.view.pipeline.wait_committed(40)  # type: ignore[attr-defined]
            handle.stop()
            await handle.wait_done()
    error = str(got[0].error)
    resume_at = got[0].ranges()[-1][1] + 1
    assert f"resume from ledger {resume_at}" in error
    async with service(config(endpoint, tmp_path)) as handle:
        assert handle.start_ledger <= resume_at
        ticket = {"start_ledger": resume_at, "end_ledger": 70, "schema": "full"}
        again = await trio.to_thread.run_sync(read, handle.flight_port, ticket)
    assert contiguous(got[0].ranges() + again.ranges(), 2, 70)
    assert jsonl_rows(tmp_path / "rows.jsonl", 2, 70) == Received(got[0].batches + again.batches).rows()


async def test_replay_from_parquet_output(upstream: Any, tmp_path: Path) -> None:
    """Parquet output (full schema, files of 5 ledgers): a start ledger in the middle of a file and
    ledgers not yet in a file (held in memory until the block completes) are served exactly."""
    from cdp.sinks._parquet import rows_from_table

    out = tmp_path / "pq"
    cfg = config(await upstream(seed=SEED), tmp_path, format="parquet", output=str(out), parquet_ledgers_per_file=5)
    async with service(cfg) as handle:
        await handle.view.pipeline.wait_committed(33)  # type: ignore[attr-defined]
        got = await trio.to_thread.run_sync(
            read, handle.flight_port, {"start_ledger": 7, "end_ledger": 33, "schema": "full"}
        )
    import pyarrow.parquet as pq

    files = sorted(out.glob("*.parquet"))
    rows = [r for f in files for r in rows_from_table(pq.read_table(f), "full", ContractDataRow)]
    want = [r for r in rows if 7 <= r["ledger_sequence"] <= 33]
    assert contiguous(got.ranges(), 7, 33)
    assert want == got.rows()


@needs_shared
async def test_pubnet_ledgers_over_flight(upstream: Any, tmp_path: Path) -> None:
    """The acceptance: over the shared pubnet ledgers, the original's ticket receives exactly the JSONL
    rows of the ledgers committed while connected, and ``{"start_ledger": S}`` every row from S on."""
    from cdp.sinks._parquet import ttp_table

    first, last = 63092982, 63092991
    files = tuple(LEDGERS / f"pubnet-{s}.xdr" for s in range(first, last + 1))
    endpoint = await upstream(ledgers=files, rate=4)
    cfg = config(endpoint, tmp_path, start_ledger=first, network_passphrase="pubnet")
    async with service(cfg) as handle:
        port = handle.flight_port
        await handle.view.pipeline.wait_committed(first + 1)  # type: ignore[attr-defined]
        async with trio.open_nursery() as readers:
            live: list[Received] = []
            readers.start_soon(
                lambda: trio.to_thread.run_sync(lambda: live.append(read(port, b"contract-data-stream")))
            )
            whole = await trio.to_thread.run_sync(read, port, {"start_ledger": first + 1, "end_ledger": last})
            await handle.view.pipeline.wait_committed(last)  # type: ignore[attr-defined]
            handle.stop()
    out = tmp_path / "rows.jsonl"
    assert contiguous(whole.ranges(), first + 1, last)
    assert ttp_table(jsonl_rows(out, first + 1, last)).equals(pa.Table.from_batches([b for _, _, b in whole.batches]))
    a, b = live[0].ranges()[0][0], live[0].ranges()[-1][1]
    assert first + 1 < a
    assert b == last
    assert contiguous(live[0].ranges(), a, b)
    assert ttp_table(jsonl_rows(out, a, b)).equals(pa.Table.from_batches([x for _, _, x in live[0].batches]))


_STALLED_CLIENT = """
import sys, pyarrow.flight as fl
client = fl.FlightClient(sys.argv[1], generic_options=[("grpc.http2.bdp_probe", 0)])
reader = client.do_get(fl.Ticket(b"contract-data-stream"))
reader.read_chunk()
print("read one", flush=True)
sys.stdin.read()  # stops reading until the test closes stdin
"""


def test_cdp_run_stops_despite_a_client_that_stopped_reading(tmp_path: Path) -> None:
    """SIGTERM with a Flight client that stopped reading (its call blocked in gRPC's write): `cdp run`
    still exits 0 after its grace, everything committed, and says why it did not wait."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from .helpers import CDP, ROOT, fake_source_process

    with fake_source_process() as fake:
        env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread",
               "FLIGHT_PORT": "0", "FLIGHT_HOST": "127.0.0.1", "FLIGHT_CLIENT_BUFFER": "2",
               "SHUTDOWN_GRACE_S": "0.5", "OUTPUT": str(tmp_path / "rows.jsonl"),
               "CHECKPOINT_PATH": str(tmp_path / "cp.json"), "PROGRESS_EVERY": "1"}  # fmt: skip
        run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        assert run.stderr is not None
        port = flight_port_of(run.stderr)
        client = subprocess.Popen([sys.executable, "-c", _STALLED_CLIENT, f"grpc://127.0.0.1:{port}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert client.stdout is not None
            assert "read one" in client.stdout.readline()
            behind = False
            for line in run.stderr:  # the hub gave up on it; 200 ledgers on, its 64 KiB window is full
                behind = behind or "flight client too slow" in line
                if behind and (m := re.search(r"progress ledger=(\d+)", line)) and int(m[1]) >= 200:
                    break
            run.send_signal(signal.SIGTERM)
            assert 0 == run.wait(timeout=30)
            rest = run.stderr.read()
        finally:
            client.kill()
            client.communicate()
            run.kill()
            run.communicate()
    assert "a client stopped reading and holds its call open; not waiting for it" in rest
    state = json.loads((tmp_path / "cp.json").read_text())
    assert (tmp_path / "rows.jsonl").stat().st_size == state["output_offset"]


async def test_catching_up_from_an_open_parquet_block_larger_than_the_buffer(upstream: Any, tmp_path: Path) -> None:
    """Ledgers of the Parquet block still open (held in memory, more of them than a client's buffer)
    are served from memory; the client is not detached over and over, and gets them exactly."""
    from cdp.sinks._parquet import rows_from_table

    out = tmp_path / "pq"
    cfg = config(await upstream(seed=SEED), tmp_path, format="parquet", output=str(out), flight_client_buffer=2,
                 parquet_ledgers_per_file=1000)  # fmt: skip
    async with service(cfg) as handle:
        await handle.view.pipeline.wait_committed(40)  # type: ignore[attr-defined]
        ticket = {"start_ledger": 3, "end_ledger": 40, "schema": "full"}
        got = await trio.to_thread.run_sync(read, handle.flight_port, ticket)
    import pyarrow.parquet as pq

    rows = [
        r for f in sorted(out.glob("*.parquet")) for r in rows_from_table(pq.read_table(f), "full", ContractDataRow)
    ]
    assert contiguous(got.ranges(), 3, 40)
    assert [r for r in rows if 3 <= r["ledger_sequence"] <= 40] == got.rows()


async def test_a_token_guards_every_call(upstream: Any, tmp_path: Path) -> None:
    """FLIGHT_AUTH_TOKEN (or its file): calls without `authorization: Bearer TOKEN`, or with another, are
    refused UNAUTHENTICATED; with it they are served."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-t0ken\n")
    cfg = config(await upstream(seed=SEED), tmp_path, end_ledger=6, flight_auth_token_file=str(token_file))

    def call(port: int, header: bytes | None) -> Any:
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        options = flight.FlightCallOptions(headers=[(b"authorization", header)] if header else [])
        try:
            return list(client.list_flights(options=options))
        finally:
            client.close()

    async with service(cfg) as handle:
        assert handle.flight_port is not None
        for header in (None, b"Bearer wrong", b"s3cr3t-t0ken"):
            with pytest.raises(flight.FlightUnauthenticatedError, match="authorization: Bearer <token>"):
                await trio.to_thread.run_sync(call, handle.flight_port, header)
        assert await trio.to_thread.run_sync(call, handle.flight_port, b"Bearer s3cr3t-t0ken")


async def test_tls(upstream: Any, tmp_path: Path) -> None:
    """FLIGHT_TLS_CERT/FLIGHT_TLS_KEY: served over TLS to a client that trusts the certificate."""

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                            str(cert)], capture_stdout=True, capture_stderr=True)  # fmt: skip
    cfg = config(await upstream(seed=SEED), tmp_path, flight_tls_cert=str(cert), flight_tls_key=str(key))

    def rows(port: int) -> int:
        client = flight.FlightClient(f"grpc+tls://127.0.0.1:{port}", tls_root_certs=cert.read_bytes())
        try:
            return (
                client.do_get(flight.Ticket(json.dumps({"start_ledger": 2, "end_ledger": 6}).encode()))
                .read_all()
                .num_rows
            )
        finally:
            client.close()

    async with service(cfg) as handle:
        await handle.view.pipeline.wait_committed(6)
        assert await trio.to_thread.run_sync(rows, handle.flight_port) > 0


async def test_clients_over_the_cap_are_refused(upstream: Any, tmp_path: Path) -> None:
    """FLIGHT_MAX_CLIENTS streams at once; one more is refused UNAVAILABLE, naming the setting."""
    cfg = config(await upstream(seed=SEED), tmp_path, flight_max_clients=2)
    async with service(cfg) as handle:
        port = handle.flight_port
        assert port is not None
        hub = handle._flight
        assert hub is not None
        clients = [flight.FlightClient(f"grpc://127.0.0.1:{port}") for _ in range(3)]

        def first_chunk(client: Any) -> Any:
            reader = client.do_get(flight.Ticket(b"contract-data-stream"))
            reader.read_chunk()
            return reader

        try:
            readers = [await trio.to_thread.run_sync(first_chunk, client) for client in clients[:2]]  # held open
            with pytest.raises(flight.FlightUnavailableError, match="FLIGHT_MAX_CLIENTS=2 streams are being served"):
                await trio.to_thread.run_sync(first_chunk, clients[2])
            assert 2 == hub.statistics().clients == len(readers)
        finally:
            for client in clients:
                client.close()


def test_200_clients_that_never_read_leave_memory_bounded(tmp_path: Path) -> None:
    """200 streams opened and never read from: the service serves FLIGHT_MAX_CLIENTS of them, refuses
    the rest, and its RSS stays under 400 MB while it goes on committing."""
    import os
    import re
    import subprocess

    from .helpers import CDP, ROOT, fake_source_process

    with fake_source_process("--ledger-bytes", "100000") as fake:
        env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread",
               "FLIGHT_PORT": "0", "SHUTDOWN_GRACE_S": "0.5", "OUTPUT": str(tmp_path / "rows.jsonl"),
               "CHECKPOINT_PATH": str(tmp_path / "cp.json"), "PROGRESS_EVERY": "50"}  # fmt: skip
        run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        assert run.stderr is not None
        clients, readers, refused = [], [], 0
        try:
            port = flight_port_of(run.stderr)
            for _ in range(200):
                client = flight.FlightClient(f"grpc://127.0.0.1:{port}", generic_options=[("grpc.http2.bdp_probe", 0)])
                clients.append(client)
                try:
                    reader = client.do_get(flight.Ticket(json.dumps({"start_ledger": 2}).encode()))
                    reader.read_chunk()  # one chunk, then never again: the call stays open
                    readers.append(reader)
                except flight.FlightUnavailableError as exc:
                    refused += "FLIGHT_MAX_CLIENTS=32" in str(exc)
            start = None
            for line in run.stderr:  # 500 ledgers on, every served client's window is long full
                if m := re.search(r"progress ledger=(\d+)", line):
                    start = start or int(m[1])
                    if int(m[1]) >= start + 500:
                        break
            rss_kib = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{run.pid}/status").read_text())[1])
        finally:
            for client in clients:
                client.close()
            run.kill()
            run.communicate()
    assert (32, 168) == (len(readers), refused)
    assert rss_kib < 400 * 1024, f"{rss_kib} KiB"
