"""The Iceberg sink on a real embedded SQL catalog (SQLite, local warehouse): the table holds exactly the rows
`cdp run` writes to JSONL, live and by a Dask backfill, on synthetic and real pubnet ledgers; the table is the
checkpoint (restarts, kill -9, reruns, other settings refused); `cdp lake compact` keeps rows and checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import cdp
from cdp._config import Config
from cdp.extract import Ledger
from cdp.testing import SyntheticLedgers
from cdp.upstream._layout import Layout, Manifest, write_store

from .conftest import LEDGERS, needs_shared
from .helpers import CDP, ROOT, serve_blocking

pytest.importorskip("pyiceberg", reason="pyiceberg (the iceberg extra) is not installed")
pytest.importorskip("pyiceberg_core", reason="pyiceberg-core (the iceberg extra) is not installed")
pytest.importorskip("distributed", reason="the backfill extra (distributed) is not installed")

from cdp.extract._rows import ContractDataRow, row_fields  # noqa: E402
from cdp.sinks._lake import LAST, Target, iceberg_type, open_catalog, referenced  # noqa: E402 - needs pyiceberg
from cdp.sinks._parquet import to_table  # noqa: E402

GEN = SyntheticLedgers(seed=29)
END = 160
PUBNET = (63092982, 63092991)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_store(root, Manifest(GEN.passphrase, Layout(8, 4)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 700)])
    return root


def _config(store: Path | str, output: str, warehouse: Path, **kw: Any) -> Config:
    values = {"datastore_url": str(store), "output": output, "iceberg_warehouse": str(warehouse), "end_ledger": END,
              "health_port": 0, "health_host": "127.0.0.1", "worker_mode": "thread", "backoff_base_s": 0.01,
              "parquet_ledgers_per_file": 40, "iceberg_commit_ledgers": 9, **kw}  # fmt: skip
    return Config.from_mapping(values)


def _jsonl(config: Config, path: Path) -> list[dict[str, Any]]:
    """What `cdp run` writes to JSONL for the same ledgers and settings."""
    serve_blocking(attrs.evolve(config, output=str(path), format="jsonl", checkpoint_path=None))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _table(config: Config, name: str = "contract_data") -> Any:
    return open_catalog(config).load_table(Target.parse(config.output, name).identifier)


def _rows(table: Any, snapshot_id: int | None = None) -> list[dict[str, Any]]:
    """The table's rows in ledger order (a stable sort: each ledger's rows keep their order)."""
    import pyarrow.compute as pc

    data = table.scan(snapshot_id=snapshot_id).to_arrow()
    data = data.take(pc.sort_indices(data, [("ledger_sequence", "ascending")]))
    return cdp.rows_from_arrow(data)


def _check_snapshots(table: Any, want: list[dict[str, Any]]) -> list[int]:
    """Every snapshot ends on a ledger boundary: it holds exactly the rows of the ledgers up to the last it names."""
    lasts = []
    for snapshot in table.snapshots():
        if snapshot.summary.operation.value == "delete":
            continue  # the first half of a compaction's overwrite, never a current snapshot
        last = int(snapshot.summary.additional_properties[LAST])
        lasts.append(last)
        assert _rows(table, snapshot.snapshot_id) == [r for r in want if r["ledger_sequence"] <= last], last
    return lasts


def _unused_files(table: Any) -> list[str]:
    table.refresh()
    root = table.location().removeprefix("file://")
    used = referenced(table)
    return [str(p) for p in Path(root).rglob("*") if p.is_file() and f"file://{p}" not in used]


@pytest.mark.parametrize("mode", ["compact", "changes"])
def test_a_live_run_into_iceberg_holds_the_jsonl_rows_and_each_snapshot_ends_on_a_ledger(
    store: Path, tmp_path: Path, mode: str
) -> None:
    config = _config(store, "iceberg://lake", tmp_path / "wh", mode=mode)
    want = _jsonl(config, tmp_path / "rows.jsonl")
    serve_blocking(attrs.evolve(config, end_ledger=100))  # a first run, then one that goes on after its snapshot
    serve_blocking(config)
    table = _table(config)
    assert _rows(table) == want
    lasts = _check_snapshots(table, want)
    assert lasts == sorted(set(lasts))
    assert lasts[-1] == END
    assert 100 in lasts  # the first run's end: a restart goes on after it
    assert not _unused_files(table)
    parquet = to_table([], "full", ContractDataRow, row_fields(mode, True)).schema
    assert {f.name: str(f.field_type) for f in table.schema().fields} == {
        f.name: iceberg_type(f.type) for f in parquet
    }  # the field dictionary's Iceberg column
    assert [f.name for f in table.spec().fields] == ["ledger_sequence_trunc"]


def test_a_finished_table_is_nothing_to_do_and_other_settings_are_refused(store: Path, tmp_path: Path) -> None:
    config = _config(store, "iceberg://lake.cd", tmp_path / "wh", end_ledger=20)
    serve_blocking(config)
    snapshots = len(_table(config, "cd").snapshots())
    with pytest.raises(cdp.NothingToDo, match="END_LEDGER=20"):
        serve_blocking(config)
    with pytest.raises(cdp.ConfigError, match=r"^OUTPUT=iceberg://lake.cd: the table holds rows made with other "
                                              r"INSTANCE_EXTRAS than now"):  # fmt: skip
        serve_blocking(attrs.evolve(config, instance_extras=False, end_ledger=30))
    assert snapshots == len(_table(config, "cd").snapshots())
    with pytest.raises(cdp.ConfigError, match=r"^OUTPUT=iceberg://a/b: give iceberg://NAMESPACE"):
        serve_blocking(attrs.evolve(config, output="iceberg://a/b"))
    from cdp._locks import exclusive
    from cdp.batch._lake import compact

    with exclusive(Path(_table(config, "cd").location().removeprefix("file://")), "OUTPUT"):  # another writer
        with pytest.raises(cdp.ConfigError, match=r"^OUTPUT=.*: in use by another cdp process \(pid \d+\)"):
            serve_blocking(attrs.evolve(config, end_ledger=30))
    with pytest.raises(cdp.ConfigError, match=r"^OUTPUT=iceberg://lake.nothing: there is no table lake.nothing$"):
        compact(attrs.evolve(config, output="iceberg://lake.nothing"))


def test_kill_9_at_five_random_moments_leaves_the_table_of_a_clean_run(store: Path, tmp_path: Path) -> None:
    end = 400
    config = _config(store, "iceberg://lake", tmp_path / "wh", end_ledger=end)
    want = _jsonl(config, tmp_path / "rows.jsonl")
    env = {**os.environ, "DATASTORE_URL": str(store), "OUTPUT": "iceberg://lake",
           "ICEBERG_WAREHOUSE": str(tmp_path / "wh"), "END_LEDGER": str(end), "HEALTH_PORT": "0",
           "HEALTH_HOST": "127.0.0.1", "ICEBERG_COMMIT_LEDGERS": "11", "PARQUET_LEDGERS_PER_FILE": "40",
           "PROGRESS_EVERY": "3", "WORKER_MODE": "thread"}  # fmt: skip
    rng = random.Random(9)
    killed = 0
    for cycle in range(5):
        run = subprocess.Popen([*CDP, "run"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert run.stderr is not None
        lines = rng.randrange(1, 20)  # progress and snapshot lines: the kill lands between or inside commits
        for line in run.stderr:
            if "progress" in line or "snapshot committed" in line:
                lines -= 1
                if lines == 0:
                    run.send_signal(signal.SIGKILL)
                    break
        run.wait(timeout=60)
        run.stderr.close()
        assert run.returncode in (0, -signal.SIGKILL), cycle
        killed += run.returncode == -signal.SIGKILL
    assert killed == 5
    final = subprocess.run([*CDP, "run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    table = _table(config)
    assert _rows(table) == want
    assert _check_snapshots(table, want)[-1] == end
    assert not _unused_files(table)


def test_a_file_no_snapshot_uses_is_removed_at_the_next_start(store: Path, tmp_path: Path) -> None:
    config = _config(store, "iceberg://lake", tmp_path / "wh", end_ledger=30)
    serve_blocking(config)
    table = _table(config)
    data = next(Path(table.location().removeprefix("file://"), "data").rglob("*.parquet"))
    stray = data.with_name("00000-0-a-killed-writer.parquet")
    stray.write_bytes(data.read_bytes())  # what a writer killed between its data file and its commit leaves
    serve_blocking(attrs.evolve(config, end_ledger=40))
    assert not stray.exists()
    assert not _unused_files(_table(config))


def test_a_backfill_into_iceberg_equals_a_live_run_and_a_live_run_continues_it(store: Path, tmp_path: Path) -> None:
    config = _config(store, "iceberg://lake", tmp_path / "wh", network_passphrase=GEN.passphrase, start_ledger=3)
    want = _jsonl(attrs.evolve(config, end_ledger=END + 40), tmp_path / "rows.jsonl")
    done = cdp.backfill(config, workers=2)
    assert (5, END - 2) == (done.partitions, done.ledgers)
    table = _table(config)
    assert _rows(table) == [r for r in want if r["ledger_sequence"] <= END]
    spans = [s.summary.additional_properties["cdp.partitions"] for s in table.snapshots()]
    assert ",".join(spans) == "3-39,40-79,80-119,120-159,160-160"  # in ledger order, over one or more snapshots
    snapshots = len(table.snapshots())
    again = cdp.backfill(config, workers=2)
    assert (0, 0) == (again.partitions, again.ledgers)
    assert snapshots == len(_table(config).snapshots())  # a rerun adds no snapshot
    serve_blocking(attrs.evolve(config, end_ledger=END + 40))
    table = _table(config)
    assert _rows(table) == want
    _check_snapshots(table, want)


@needs_shared
def test_real_pubnet_ledgers_live_and_backfilled(tmp_path: Path) -> None:
    first, last = PUBNET
    store = tmp_path / "store"
    ledgers = [Ledger(s, None, (LEDGERS / f"pubnet-{s}.xdr").read_bytes()) for s in range(first, last + 1)]
    write_store(store, Manifest("Public Global Stellar Network ; September 2015", Layout(1, 4)), ledgers)
    config = _config(store, "iceberg://live", tmp_path / "wh", start_ledger=first, end_ledger=last,
                     network_passphrase="pubnet", parquet_ledgers_per_file=4)  # fmt: skip
    want = _jsonl(config, tmp_path / "rows.jsonl")
    assert want
    serve_blocking(config)
    assert _rows(_table(config)) == want
    filled = attrs.evolve(config, output="iceberg://filled")
    cdp.backfill(filled, workers=1)
    assert _rows(_table(filled)) == want


def test_compaction_keeps_rows_and_checkpoint_and_expiry_removes_unused_files(store: Path, tmp_path: Path) -> None:
    from cdp.batch._lake import compact

    config = _config(store, "iceberg://lake", tmp_path / "wh", iceberg_commit_ledgers=3)
    want = _jsonl(config, tmp_path / "rows.jsonl")
    serve_blocking(config)
    table = _table(config)
    before = sum(1 for _ in table.scan().plan_files())
    assert before > 20
    done = compact(config)
    table = _table(config)
    files = list(table.scan().plan_files())
    assert (done.files_before, done.files_after, len(files)) == (before, 5, 5)  # one per 40-ledger partition
    assert _rows(table) == want
    assert table.current_snapshot().summary.additional_properties[LAST] == str(END)
    assert done.files_removed == 0  # the replaced files are still the older snapshots'
    import datetime as dt

    expired = compact(config, expire_older_than=dt.timedelta(0))
    assert expired.partitions == 0
    assert expired.snapshots_expired == len(table.snapshots()) - 1
    assert expired.files_removed >= before
    table = _table(config)
    assert len(table.snapshots()) == 1
    assert _rows(table) == want
    assert not _unused_files(table)
    serve_blocking(attrs.evolve(config, end_ledger=END + 10))  # a compacted table goes on
    assert _table(config).current_snapshot().summary.additional_properties[LAST] == str(END + 10)


def test_cdp_lake_compact_command(store: Path, tmp_path: Path) -> None:
    config = _config(store, "iceberg://lake", tmp_path / "wh", iceberg_commit_ledgers=5, end_ledger=60)
    serve_blocking(config)
    env = {**os.environ, "ICEBERG_WAREHOUSE": str(tmp_path / "wh"), "LOG_LEVEL": "WARNING"}
    done = subprocess.run([*CDP, "lake", "compact", "--output", "iceberg://lake", "--expire-older-than-s", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lake.contract_data: 2 partitions rewritten, files ")
    wrong = subprocess.run([*CDP, "lake", "compact", "--output", str(tmp_path / "x.jsonl")], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (wrong.returncode, wrong.stderr.strip().splitlines()[-1]) == (
        2, f"cdp: error: OUTPUT={tmp_path / 'x.jsonl'}: cdp lake works on iceberg://NAMESPACE[.TABLE] tables"
    )  # fmt: skip


@pytest.mark.parametrize(("interval", "ledgers", "snapshots"), [(3600.0, 1000, 1), (3600.0, 4, 3), (0.0, 1000, 10)])
async def test_a_snapshot_every_interval_or_every_n_ledgers_whichever_first(
    tmp_path: Path, interval: float, ledgers: int, snapshots: int
) -> None:
    """Ten ledgers written one by one: held until ICEBERG_COMMIT_LEDGERS or the interval, and the rest at the
    end; each commit says what is durable, nothing before it."""
    from cdp.processors import ContractDataProcessor
    from cdp.sinks._iceberg import IcebergSink

    config = _config("unused", "iceberg://lake", tmp_path / "wh", iceberg_commit_interval_s=interval,
                     iceberg_commit_ledgers=ledgers)  # fmt: skip
    processor = ContractDataProcessor(GEN.passphrase)
    sink = IcebergSink(config, "contract_data", processor.columns)
    assert await trio.to_thread.run_sync(sink.open) is None
    durable = []
    for seq in range(2, 12):
        rows = processor.process(Ledger(seq, None, GEN.ledger(seq))).rows
        done = await sink.write(seq, rows)
        if done is not None:
            durable.append(done.ledger)
    final = await sink.flush()
    sink.close()
    assert len(durable) + (final is not None) == snapshots == len(_table(config).snapshots())
    assert ([*durable, final.ledger] if final else durable)[-1] == 11
