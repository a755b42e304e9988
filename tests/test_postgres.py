"""The PostgreSQL sink against a real server: history, current state, evictions, crashes, restarts."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import cdp
from cdp._config import Config
from cdp.extract import extract_rows_fast
from cdp.extract._evictions import evicted_rows
from cdp.extract._ledger import Ledger
from cdp.ops._metrics import exposition, open_registry
from cdp.processors._ttl import TtlProcessor
from cdp.testing import SyntheticLedgers
from cdp.xdr._header import peek_header

from .conftest import LEDGERS, needs_shared
from .helpers import CDP, ROOT, fake_source_process
from .pg_server import PostgresServer

psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")

SEED = 13
PUBNET = "Public Global Stellar Network ; September 2015"
VALUE_FIELDS = ("contract_id", "contract_key_type", "contract_durability", "asset_type", "asset_code", "asset_issuer",
                "balance_holder", "balance", "last_modified_ledger", "ledger_sequence", "closed_at", "key",
                "key_decoded", "val", "val_decoded", "contract_data_xdr", "contract_instance_type",
                "contract_instance_wasm_hash")  # fmt: skip


def _as_row(record: dict[str, Any]) -> dict[str, Any]:
    """A database row as the JSONL line would have it."""
    out = dict(record)
    if "balance" in out:
        out["balance"] = "" if out["balance"] is None else str(out["balance"])
    if "closed_at" in out:
        out["closed_at"] = out["closed_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def history(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM contract_data_history ORDER BY ledger_sequence, row_in_ledger")
        rows = [_as_row(r) for r in cur.fetchall()]
    for r in rows:
        del r["row_in_ledger"]
    return rows


def current(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM contract_data_current")
        return {r["ledger_key_hash"]: _as_row(r) for r in cur.fetchall()}


def checkpoint(dsn: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT ledger FROM cdp_checkpoint").fetchone()
        except psycopg.errors.UndefinedTable:  # no run has started yet
            return None
    return None if row is None else int(row[0])


Model = dict[str, dict[str, Any]]


def replay(ledgers: Iterable[tuple[int, int, bytes]], passphrase: str) -> tuple[list[dict[str, Any]], Model]:
    """The rows, and the current state a replay of them gives: the model the tables must equal. TTLs
    from the full decode (the ``ttl`` processor), evictions from the decoded ``evicted_keys``."""
    rows: list[dict[str, Any]] = []
    state: dict[str, dict[str, Any]] = {}
    for seq, close_time, raw in ledgers:
        got, _ = extract_rows_fast(raw, passphrase)
        rows += got
        for r in got:
            key = r["ledger_key_hash"]
            if r["deleted"]:
                state.pop(key, None)
                continue
            old = state.get(key, {})
            live = r["live_until_ledger_seq"]
            if live is None:
                live = old.get("live_until_ledger_seq")
            state[key] = {**{f: r[f] for f in VALUE_FIELDS}, "live_until_ledger_seq": live, "archived": False,
                          "archived_at_ledger": None}  # fmt: skip
        for t in TtlProcessor().process(Ledger(seq, close_time, raw)):
            if not t["deleted"] and t["key_hash"] in state:
                state[t["key_hash"]]["live_until_ledger_seq"] = t["live_until_ledger_seq"]
        for e in evicted_rows(raw):
            if e["contract_durability"].endswith("Persistent"):
                if e["ledger_key_hash"] in state:
                    state[e["ledger_key_hash"]].update(archived=True, archived_at_ledger=seq)
            else:
                state.pop(e["ledger_key_hash"], None)
    return rows, state


def same_state(dsn: str, model: dict[str, dict[str, Any]]) -> None:
    got = current(dsn)
    assert set(model) == set(got)
    for key, want in model.items():
        have = {f: got[key][f] for f in want}
        assert want == have, key


def synthetic(first: int, last: int) -> list[tuple[int, int, bytes]]:
    gen = SyntheticLedgers(seed=SEED)
    return [(s, gen.close_time(s), gen.ledger(s)) for s in range(first, last + 1)]


@contextlib.contextmanager
def opened_sink(dsn: str) -> Iterator[Any]:
    """A ``PostgresSink`` on the default tables, open, closed afterwards."""
    from cdp.sinks._postgres import PostgresSink

    sink = PostgresSink(dsn, "public", "contract_data")
    sink.open()
    try:
        yield sink
    finally:
        sink.close()


def state_items(first: int, last: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """What the state processor hands the sink for synthetic ledgers ``first..last``."""
    from cdp.processors._contract_data import ContractDataProcessor
    from cdp.processors._state import ContractStateProcessor

    gen = SyntheticLedgers(seed=SEED)
    state = ContractStateProcessor(ContractDataProcessor(gen.passphrase))
    return [(s, list(state.process(Ledger(s, gen.close_time(s), gen.ledger(s))).rows)) for s in range(first, last + 1)]


def config(endpoint: str, dsn: str, **kw: Any) -> Config:
    values = {"source_endpoint": endpoint, "health_port": 0, "worker_mode": "thread", "start_ledger": 2,
              "output": dsn, **kw}  # fmt: skip
    return Config.from_mapping(values)


@needs_shared
async def test_pubnet_ledgers_into_postgres(upstream: Any, postgres: PostgresServer) -> None:
    """The acceptance: 63092982..91 over gRPC into PostgreSQL: the history table holds exactly the rows
    the JSONL output holds, and the current state is the last row per key minus deleted keys."""
    first, last = 63092982, 63092991
    files = tuple(LEDGERS / f"pubnet-{s}.xdr" for s in range(first, last + 1))
    dsn = postgres.create_database("pubnet")
    endpoint = await upstream(ledgers=files)
    with trio.fail_after(120):
        await cdp.serve(config(endpoint, dsn, start_ledger=first, end_ledger=last, network_passphrase="pubnet"))
    raws = [(LEDGERS / f"pubnet-{s}.xdr").read_bytes() for s in range(first, last + 1)]
    rows, model = replay([(peek_header(raw).sequence, peek_header(raw).close_time, raw) for raw in raws], PUBNET)
    got = history(dsn)
    assert len(rows) > 100
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(got)]
    same_state(dsn, model)
    assert last == checkpoint(dsn)


async def test_synthetic_state_with_ttls_restores_and_evictions(upstream: Any, postgres: PostgresServer) -> None:
    """Synthetic ledgers with TTL changes, removals, restores and evictions (temporary keys removed,
    persistent ones archived): the current state equals a replay of the history."""
    dsn = postgres.create_database("synthetic")
    endpoint = await upstream(seed=SEED)
    with trio.fail_after(120):
        await cdp.serve(config(endpoint, dsn, end_ledger=120))
    rows, model = replay(synthetic(2, 120), "Test SDF Network ; September 2015")
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(history(dsn))]
    assert any(v["archived"] for v in model.values()), "some persistent key is archived"
    same_state(dsn, model)


def _run(endpoint: str, dsn: str, end: int) -> subprocess.Popen[str]:
    env = {**os.environ, "SOURCE_ENDPOINT": endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread", "OUTPUT": dsn,
           "END_LEDGER": str(end), "PROGRESS_EVERY": "1", "LOG_LEVEL": "INFO"}  # fmt: skip
    return subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def test_five_kill_9_cycles_leave_the_tables_of_a_clean_run(postgres: PostgresServer) -> None:
    """`cdp run` SIGKILLed five times at random ledgers, restarted each time from the database's own
    checkpoint: history, current state and checkpoint equal a clean run's."""
    end = 150
    clean, crashed = postgres.create_database("clean"), postgres.create_database("crashed")
    rng = random.Random(7)
    with fake_source_process("--seed", str(SEED)) as fake:
        run = _run(fake.endpoint, clean, end)
        assert 0 == run.wait(timeout=120)
        run.communicate()
        for cycle in range(5):
            run = _run(fake.endpoint, crashed, end)
            assert run.stderr is not None
            target = rng.randint(5, 20) + (checkpoint(crashed) or 2)
            for line in run.stderr:
                if (m := re.search(r"progress ledger=(\d+)", line)) and int(m[1]) >= target:
                    break
            run.send_signal(signal.SIGKILL)
            run.wait()
            run.communicate()
            assert checkpoint(crashed) is not None, cycle
        run = _run(fake.endpoint, crashed, end)
        assert 0 == run.wait(timeout=120)
        _, log = run.communicate()
    assert "resuming from the output's checkpoint" in log
    assert history(clean) == history(crashed)
    assert current(clean) == current(crashed)
    assert end == checkpoint(clean) == checkpoint(crashed)


async def test_database_restarted_mid_run(upstream: Any, postgres: PostgresServer) -> None:
    """The server restarts (fast shutdown: connections dropped) while ledgers stream: writes fail, are
    retried with backoff on a new connection, and the tables are exact; /health said so meanwhile."""
    dsn = postgres.create_database("restarted")
    endpoint = await upstream(seed=SEED, rate=100)
    cfg = config(endpoint, dsn, end_ledger=90)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(lambda task_status: cdp.serve(cfg, task_status=task_status))
        await handle.view.pipeline.wait_committed(20)
        await trio.to_thread.run_sync(postgres.stop)
        await trio.to_thread.run_sync(postgres.start)
        with trio.fail_after(120):
            await handle.wait_done()
        stats = handle.view.sink_stats()
        _, components = handle.view.health()
        metrics = exposition(open_registry(handle.view)).decode()
    assert components["sink"]["metrics"]["retries"] == stats.retries
    assert f"contract_data_processor_sink_retries_total {float(stats.retries)}" in metrics
    assert stats.retries >= 1
    assert stats.reconnects >= 1
    rows, model = replay(synthetic(2, 90), "Test SDF Network ; September 2015")
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(history(dsn))]
    same_state(dsn, model)


def test_a_second_run_on_the_same_tables_is_refused(postgres: PostgresServer, tmp_path: Path) -> None:
    """Exit 2 at start, naming the holder (its pid, as for file outputs)."""
    dsn = postgres.create_database("locked")
    with psycopg.connect(dsn, autocommit=True, application_name="cdp pid=4242") as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('public.contract_data'))")
        env = {**os.environ, "OUTPUT": dsn, "HEALTH_PORT": "0"}
        proc = subprocess.run([*CDP, "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert 2 == proc.returncode
    assert proc.stderr.endswith(
        "cdp: error: OUTPUT: another cdp run (cdp pid=4242) is writing public.contract_data in this database\n"
    )


async def test_the_lock_is_taken_again_after_a_server_restart(upstream: Any, postgres: PostgresServer) -> None:
    """A lock lives with its connection: after `pg_ctl restart` the running service takes it again on its
    new connection, so a second run started then is refused (exit 2, naming the first's pid), and the
    first goes on and stops exact."""
    dsn = postgres.create_database("relocked")
    endpoint = await upstream(seed=SEED, rate=50)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(lambda task_status: cdp.serve(config(endpoint, dsn), task_status=task_status))
        await handle.view.pipeline.wait_committed(10)
        await trio.to_thread.run_sync(postgres.stop)
        await trio.to_thread.run_sync(postgres.start)
        await handle.view.pipeline.wait_committed(20)  # written on a new connection, under the lock again
        env = {**os.environ, "OUTPUT": dsn, "HEALTH_PORT": "0", "SOURCE_ENDPOINT": endpoint}
        with trio.fail_after(60):
            second = await trio.run_process([*CDP, "run"], cwd=ROOT, env=env, capture_stderr=True, check=False)
        await handle.view.pipeline.wait_committed(25)
        handle.stop()
        with trio.fail_after(60):
            await handle.wait_done()
    assert 2 == second.returncode, second.stderr.decode()[-2000:]
    assert f"another cdp run (cdp pid={os.getpid()}) is writing public.contract_data" in second.stderr.decode()
    last = checkpoint(dsn)
    assert last is not None
    assert last >= 25
    rows, model = replay(synthetic(2, last), "Test SDF Network ; September 2015")
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(history(dsn))]
    same_state(dsn, model)


def test_names_past_postgresqls_63_bytes_are_refused_at_start() -> None:
    env = {**os.environ, "OUTPUT": "postgresql://nobody@127.0.0.1:1/none", "HEALTH_PORT": "0",
           "POSTGRES_TABLE_PREFIX": "p" * 62}  # fmt: skip
    proc = subprocess.run([*CDP, "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert 2 == proc.returncode
    assert proc.stderr.startswith(f"cdp: error: POSTGRES_TABLE_PREFIX={'p' * 62}: the index ")
    assert "PostgreSQL names take at most 63 (a prefix of at most 19 bytes fits)\n" in proc.stderr


def _commit_all(dsn: str, items: list[tuple[int, list[dict[str, Any]]]], group: int, cut: int = 0) -> Model:
    """Commit ``items`` in groups of ``group`` ledgers (with a group boundary at ``cut`` too)."""
    with opened_sink(dsn) as sink:
        for part in (items[:cut], items[cut:]):
            for k in range(0, len(part), group):
                sink._commit(part[k : k + group])
    return current(dsn)


def test_a_group_commits_the_state_its_ledgers_commit_one_by_one(postgres: PostgresServer) -> None:
    """The current state after ledgers committed together equals that after the same ledgers one per
    transaction: real synthetic ledgers (TTL extensions, removals, restores, evictions) and a crafted
    key that meets every order of events within one group."""
    items = state_items(2, 129)
    base = next(r for _, rows in items for r in rows if "_kind" not in r and not r["deleted"])
    key = "f" * 64
    ttl = {"_kind": "ttl", "key_hash": key}
    evict = {"_kind": "eviction", "ledger_key_hash": key, "contract_id": base["contract_id"], "key": base["key"]}

    def data(seq: int, deleted: bool = False, live: int | None = None) -> dict[str, Any]:
        return {**base, "ledger_key_hash": key, "ledger_sequence": seq, "deleted": deleted,
                "live_until_ledger_seq": live, "last_modified_ledger": seq}  # fmt: skip

    crafted = [  # each ledger's rows: data first, then TTLs, then evictions, as the processor orders them
        [data(200, live=900)],
        [{**ttl, "live_until_ledger_seq": 950, "ledger_sequence": 201}],
        [data(202), {**evict, "contract_durability": "ContractDataDurabilityPersistent", "ledger_sequence": 202}],
        [{**ttl, "live_until_ledger_seq": 990, "ledger_sequence": 203}],
        [data(204)],
        [data(205, deleted=True), {**ttl, "live_until_ledger_seq": 1000, "ledger_sequence": 205}],
        [data(206)],
        [{**ttl, "live_until_ledger_seq": 1010, "ledger_sequence": 207}],
        [{**evict, "contract_durability": "ContractDataDurabilityTemporary", "ledger_sequence": 208}],
        [{**ttl, "live_until_ledger_seq": 1020, "ledger_sequence": 209}],
        [data(210, live=1100)],
        [{**evict, "contract_durability": "ContractDataDurabilityPersistent", "ledger_sequence": 211}],
    ]
    items += [(200 + i, rows) for i, rows in enumerate(crafted)]
    one_by_one = _commit_all(postgres.create_database("single"), items, 1)
    assert one_by_one[key]["archived"]
    assert one_by_one[key]["live_until_ledger_seq"] == 1100
    assert one_by_one == _commit_all(postgres.create_database("grouped"), items, 64)
    assert one_by_one == _commit_all(postgres.create_database("whole"), items, len(items))
    for cut in range(len(items) - len(crafted) + 1, len(items)):  # two groups, split anywhere in the crafted
        assert one_by_one == _commit_all(postgres.create_database(f"cut{cut}"), items, len(items), cut), cut


def test_backfill_then_live_run_write_the_same_tables(postgres: PostgresServer, tmp_path: Path) -> None:
    """`cdp backfill` of 2..61 into PostgreSQL (a real Dask LocalCluster, partitions of 15 extracted in
    parallel, written in order), then `cdp run` from the same store resuming at the database's
    checkpoint up to 100: exactly the tables of one `cdp run` over 2..100; a rerun of the backfill
    has nothing to do."""
    pytest.importorskip("distributed", reason="the backfill extra (distributed) is not installed")
    from cdp.upstream._layout import Layout, Manifest, write_store

    gen = SyntheticLedgers(seed=SEED)
    store = tmp_path / "store"
    write_store(store, Manifest(gen.passphrase, Layout(8, 4)), [Ledger(s, None, gen.ledger(s)) for s in range(2, 101)])
    both, once = postgres.create_database("backfilled"), postgres.create_database("once")
    base = {"datastore_url": str(store), "network_passphrase": gen.passphrase, "start_ledger": 2,
            "parquet_ledgers_per_file": 15, "health_port": 0, "worker_mode": "thread"}  # fmt: skip
    summary = cdp.backfill(Config.from_mapping({**base, "end_ledger": 61, "output": both}), workers=2)
    assert (5, 60) == (summary.partitions, summary.ledgers)
    assert len(history(both)) == summary.rows  # rows, not the TTL and eviction records beside them
    assert 61 == checkpoint(both)
    again = cdp.backfill(Config.from_mapping({**base, "end_ledger": 61, "output": both}), workers=2)
    assert 0 == again.partitions

    async def live(dsn: str) -> None:
        await cdp.serve(Config.from_mapping({**base, "end_ledger": 100, "output": dsn}))

    trio.run(live, both)
    trio.run(live, once)
    assert history(once) == history(both)
    assert current(once) == current(both)
    assert 100 == checkpoint(both)
    rows, model = replay(synthetic(2, 100), gen.passphrase)
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(history(both))]
    same_state(both, model)


async def test_flight_beside_postgres_serves_only_contract_rows(upstream: Any, postgres: PostgresServer) -> None:
    """The state processor's TTL and eviction records reach the tables, not Flight clients nor the
    rows metric."""
    flight = pytest.importorskip("pyarrow.flight", reason="pyarrow (the flight extra) is not installed")
    import json

    dsn = postgres.create_database("flight")
    endpoint = await upstream(seed=SEED, rate=50)  # ledger 20 comes ~0.4 s after the start: the client is there
    cfg = config(endpoint, dsn, end_ledger=40, flight_port=0, flight_host="127.0.0.1")

    def read(port: int) -> list[dict[str, Any]]:
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        ticket = flight.Ticket(json.dumps({"start_ledger": 20, "end_ledger": 40, "schema": "full"}).encode())
        rows = client.do_get(ticket).read_all().to_pylist()
        client.close()
        return rows

    async with trio.open_nursery() as nursery:
        handle = await nursery.start(lambda task_status: cdp.serve(cfg, task_status=task_status))
        got = await trio.to_thread.run_sync(read, handle.flight_port)
        await handle.wait_done()
        processed = handle.view.pipeline.statistics().rows
    want = [r for r in history(dsn) if r["ledger_sequence"] >= 20]
    assert len(want) == len(got)
    assert all(r["contract_id"] for r in got)
    assert len(history(dsn)) == processed


def test_a_commit_whose_answer_was_lost_is_not_written_twice(postgres: PostgresServer) -> None:
    """The connection drops after the server committed a group but before the sink heard so: the
    retry finds the checkpoint at the group's end and writes nothing again (no duplicate-key error)."""
    items = state_items(2, 11)
    dsn = postgres.create_database("lost_answer")
    with opened_sink(dsn) as sink:
        sink._commit(items[:5])
        before = history(dsn)
        sink._failed(psycopg.OperationalError("server closed the connection unexpectedly"), items[:5], 0.1)
        sink._commit(items[:5])  # the retry of the same group
        assert before == history(dsn)
        sink._commit(items[5:])
    assert 11 == checkpoint(dsn)
    assert len(history(dsn)) == sum(1 for _, rows in items for r in rows if "_kind" not in r)


def _scanned(dsn: str) -> dict[str, int]:
    """Rows read by sequential scans of each table so far."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT relname, seq_tup_read FROM pg_stat_user_tables").fetchall()
        return {name: int(n) for name, n in rows}


def test_commits_look_keys_up_by_index_as_the_tables_grow(postgres: PostgresServer) -> None:
    """The statements applying a commit to the current state join it to both tables; the sink's first
    commit sees them empty. Once they hold 30,000 realistic rows more, no later commit reads either
    table whole (a plan kept from the first commit did: a hash join over a scan of all of history)."""
    from cdp.sinks._pg_rows import CURRENT_COLUMNS, HISTORY_COLUMNS

    items = state_items(2, 13)
    dsn = postgres.create_database("plans")
    with opened_sink(dsn) as sink:
        sink._commit(items[:4])
        with psycopg.connect(dsn, autocommit=True) as conn:  # the tables grow behind the sink's back
            n = conn.execute("SELECT count(*) FROM contract_data_history").fetchone()[0]
            copies = 30_000 // n + 1
            hist = ", ".join("h.ledger_sequence + 1000000 * g" if c == "ledger_sequence" else f"h.{c}"
                             for c in ("row_in_ledger", *(c for c, _ in HISTORY_COLUMNS)))  # fmt: skip
            conn.execute(f"INSERT INTO contract_data_history SELECT {hist} FROM contract_data_history h, "
                         "generate_series(1, %s) g", [copies])  # fmt: skip
            names = [c for c, _ in CURRENT_COLUMNS]
            conn.execute(f"INSERT INTO contract_data_current (ledger_key_hash, {', '.join(names)}) SELECT "
                         f"md5(c.ledger_key_hash || g) || md5(g::text), {', '.join('c.' + c for c in names)} "
                         "FROM contract_data_current c, generate_series(1, %s) g", [copies])  # fmt: skip
        before = _scanned(dsn)
        for k in range(4, len(items), 2):
            sink._commit(items[k : k + 2])
        sink._conn.execute("SELECT pg_stat_force_next_flush()")  # its counts reach the shared ones now
    after = _scanned(dsn)
    for table in ("contract_data_history", "contract_data_current"):
        assert after[table] - before[table] < 30_000, (table, after[table] - before[table])


def test_state_literals_take_only_hex_keys_and_integers() -> None:
    """The current-state statements get their keys and values as array literals in the SQL text: only
    what needs no quoting gets there; anything else is refused, not quoted."""
    from cdp.sinks._pg_rows import StateChange, Upsert

    key = "0a" * 32
    change = StateChange(upserts={key: Upsert(7, 2, None, 9)}, deletes={"f" * 64}, ttls={"1" * 64: 99})
    assert change.literals() == {
        "delete": (f"'{{{'f' * 64}}}'::text[]",),
        "upsert": (
            f"'{{{key}}}'::text[]",
            "'{7}'::bigint[]",
            "'{2}'::bigint[]",
            "'{NULL}'::bigint[]",
            "'{9}'::bigint[]",
        ),
        "ttl": (f"'{{{'1' * 64}}}'::text[]", "'{99}'::bigint[]"),
    }
    for bad in ("A" * 64, "0a" * 31, "'; DROP TABLE x; --" + "0" * 45, f"{key},{key}"):
        with pytest.raises(ValueError, match="64 lowercase hex digits"):
            StateChange(deletes={bad}).literals()
    with pytest.raises(ValueError, match="invalid literal for int"):
        StateChange(ttls={key: "1); DROP TABLE x; --"}).literals()  # type: ignore[dict-item]


def test_decoded_values_are_encoded_once_per_xdr_and_the_cache_stays_bounded() -> None:
    from cdp.sinks._pg_rows import Rendered

    rendered = Rendered(budget=40)  # two of these entries (8 bytes of XDR, 11 of jsonb) per field
    first = rendered.jsonb("key_decoded", "AAAAAQ==", {"u32": 1})
    assert first == b'\x01{"u32":1}'
    assert rendered.jsonb("key_decoded", "AAAAAQ==", {"never": "encoded"}) is first  # the XDR decides
    assert rendered.jsonb("val_decoded", "AAAAAQ==", {"u32": 2}) == b'\x01{"u32":2}'  # per field
    rendered.jsonb("key_decoded", "AAAAAg==", {"u32": 2})
    assert rendered.jsonb("key_decoded", "AAAAAQ==", {"u32": 9}) is first  # still held
    rendered.jsonb("key_decoded", "AAAAAw==", {"u32": 3})  # over the budget: that field starts over
    assert rendered.jsonb("key_decoded", "AAAAAQ==", {"u32": 9}) == b'\x01{"u32":9}'
    assert rendered.jsonb("val_decoded", "AAAAAQ==", {"u32": 9}) == b'\x01{"u32":2}'


def test_a_refused_write_is_one_line_and_the_checkpoint_stays(postgres: PostgresServer) -> None:
    """A privilege revoked between runs: not a lost connection, so no retry: exit 1 with one line naming
    the ledgers, the tables and the privilege; the checkpoint stays on the last committed ledger."""
    admin = postgres.create_database("revoked")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS writer")
        conn.execute("CREATE ROLE writer LOGIN")
        conn.execute("GRANT ALL ON SCHEMA public TO writer")
        conn.execute("GRANT CREATE ON DATABASE revoked TO writer")
    dsn = admin.replace("postgresql://cdp@", "postgresql://writer@")
    with fake_source_process("--seed", str(SEED)) as fake:
        env = {**os.environ, "OUTPUT": dsn, "HEALTH_PORT": "0", "SOURCE_ENDPOINT": fake.endpoint}
        first = subprocess.run([*CDP, "run", "--end-ledger", "10"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert 0 == first.returncode, first.stderr
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("REVOKE INSERT ON contract_data_history FROM writer")
        second = subprocess.run([*CDP, "run", "--end-ledger", "20"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
    assert 1 == second.returncode
    assert "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("cdp: error: OUTPUT: the database refused ledgers 11..")
    assert last.endswith(
        "of public.contract_data: InsufficientPrivilege: permission denied for table contract_data_history"
    )
    assert 10 == checkpoint(admin)


def test_a_stop_does_not_wait_for_a_table_another_session_locked(postgres: PostgresServer) -> None:
    """Another session holds ACCESS EXCLUSIVE on the history table, so commits block: SIGTERM exits 0
    within SHUTDOWN_GRACE_S + 5 s (the blocked statement is cancelled, its transaction rolled back), a
    second SIGTERM exits 130 within a second; the checkpoint stays where it was and a later run is exact."""
    import time

    dsn = postgres.create_database("tablelocked")
    with fake_source_process("--seed", str(SEED)) as fake:
        env = {**os.environ, "OUTPUT": dsn, "HEALTH_PORT": "0", "SOURCE_ENDPOINT": fake.endpoint,
               "SHUTDOWN_GRACE_S": "1"}  # fmt: skip
        first = subprocess.run([*CDP, "run", "--end-ledger", "10"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert 0 == first.returncode, first.stderr
        for signals, status, within in ((1, 0, 1 + 5), (2, 130, 1.0)):
            run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env={**env, "PROGRESS_EVERY": "1"},
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
            assert run.stderr is not None
            for line in run.stderr:  # committing: the tables are in use
                if "progress ledger=" in line:
                    break
            with psycopg.connect(dsn) as holder:  # a transaction that keeps the lock until it ends
                holder.execute("LOCK TABLE contract_data_history IN ACCESS EXCLUSIVE MODE")
                locked_at = checkpoint_in(holder)
                run.send_signal(signal.SIGTERM)
                t0 = time.monotonic()
                if signals == 2:
                    for line in run.stderr:  # taken: a second signal now is a second one, not a repeat
                        if "stop requested" in line:
                            break
                    run.send_signal(signal.SIGTERM)
                    t0 = time.monotonic()
                code = run.wait(timeout=90)
                elapsed = time.monotonic() - t0
                rest = run.stderr.read()
                run.stderr.close()
                assert (status, True) == (code, elapsed < within), (elapsed, rest[-3000:])
                holder.rollback()
            assert locked_at == checkpoint(dsn)  # no commit got past the lock
        end = (checkpoint(dsn) or 0) + 20
        last = subprocess.run([*CDP, "run", "--end-ledger", str(end)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert 0 == last.returncode, last.stderr
    rows, model = replay(synthetic(2, end), "Test SDF Network ; September 2015")
    assert rows == [{k: r[k] for k in rows[i]} for i, r in enumerate(history(dsn))]
    same_state(dsn, model)


def checkpoint_in(conn: Any) -> int:
    return int(conn.execute("SELECT ledger FROM cdp_checkpoint").fetchone()[0])


def test_a_run_whose_tables_were_taken_while_it_reconnected_stops(postgres: PostgresServer) -> None:
    """The first run's connection drops (its lock with it) and a second run takes the tables before the
    first reconnects: the first must not write beside it; it stops, naming the holder."""
    from cdp._errors import CdpError
    from cdp.sinks._postgres import PostgresSink

    dsn = postgres.create_database("taken")
    items = state_items(2, 3)
    with opened_sink(dsn) as first:
        first._commit(items[:1])
        first._conn.close()  # as a server restart would: the session, and its lock, are gone
        second = PostgresSink(dsn, "public", "contract_data")
        second.open()
        try:
            with pytest.raises(CdpError, match=r"another cdp run \(cdp pid=\d+\) is writing public.contract_data .*"
                                               r"while this run was reconnecting; this run stops$"):  # fmt: skip
                first._commit(items[1:])
        finally:
            second.close()
    assert 2 == checkpoint(dsn)
