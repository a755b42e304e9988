"""The lake on object storage (SeaweedFS S3 on 127.0.0.1): Parquet straight to s3:// from `cdp run` and `cdp backfill`,
and an Iceberg table in an S3 warehouse under a PostgreSQL SQL catalog, backfilled by a Dask cluster whose workers
reach the output only through S3 (one of them killed mid-partition), then continued live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

import cdp
from cdp._config import Config
from cdp.extract import Ledger
from cdp.testing import SyntheticLedgers
from cdp.upstream._fs import start_fsspec_loop
from cdp.upstream._layout import Layout, Manifest, write_store

from .conftest import LEDGERS, needs_shared
from .helpers import KillingContractData, serve_blocking
from .pg_server import PostgresServer

pytest.importorskip("distributed", reason="the backfill extra (distributed) is not installed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

GEN = SyntheticLedgers(seed=31)
FIRST, LAST, PER_FILE = 3, 90, 20


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_store(root, Manifest(GEN.passphrase, Layout(4, 4)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 140)])
    return root


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: Any) -> str:
    """A bucket of its own; s3fs (and Dask workers started from here) configured only by AWS_* variables."""
    s3fs = pytest.importorskip("s3fs")
    start_fsspec_loop()
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "cdp", "AWS_SECRET_ACCESS_KEY": "cdp",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    name = request.node.name.lower().replace("_", "-")[:50].strip("-")
    s3fs.S3FileSystem().mkdir(name)
    return name


def _config(store: Path, output: str, **kw: Any) -> Config:
    values = {"datastore_url": str(store), "network_passphrase": GEN.passphrase, "start_ledger": FIRST,
              "end_ledger": LAST, "output": output, "parquet_ledgers_per_file": PER_FILE, "backoff_base_s": 0.01,
              "health_port": 0, "health_host": "127.0.0.1", "worker_mode": "thread", **kw}  # fmt: skip
    return Config.from_mapping(values)


def _s3_tables(url: str) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    out = {}
    for path in sorted(fs.ls(url.removeprefix("s3://"), detail=False)):
        if path.endswith(".parquet"):
            with fs.open(path, "rb") as f:
                out[path.rsplit("/", 1)[1]] = pq.read_table(f).replace_schema_metadata(None)
    return out


def _local_tables(directory: Path) -> dict[str, Any]:
    return {p.name: pq.read_table(p).replace_schema_metadata(None) for p in sorted(directory.glob("*.parquet"))}


def test_parquet_straight_to_s3_from_run_and_backfill_equals_the_local_sink(
    store: Path, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    serve_blocking(_config(store, str(local) + "/", checkpoint_path=str(tmp_path / "cp.json")))
    want = _local_tables(local)
    assert len(want) == 5

    run = _config(store, f"s3://{bucket}/run/")
    serve_blocking(run)
    assert _s3_tables(f"s3://{bucket}/run") == want  # same names, same contents
    resumed = _config(store, f"s3://{bucket}/resumed/", end_ledger=50)
    serve_blocking(resumed)  # ends inside the 40..59 block: 40..50 is a file, the next run goes on at 51
    serve_blocking(attrs.evolve(resumed, end_ledger=LAST))
    parts = _s3_tables(f"s3://{bucket}/resumed")
    assert "contract_data-0000000051-0000000059.parquet" in parts
    assert pa.concat_tables(parts.values()) == pa.concat_tables(want.values())
    with pytest.raises(cdp.NothingToDo):
        serve_blocking(attrs.evolve(run, end_ledger=LAST))
    with pytest.raises(cdp.ConfigError, match="made with other row settings"):
        serve_blocking(attrs.evolve(run, end_ledger=LAST + 20, instance_extras=False))

    fill = _config(store, f"s3://{bucket}/fill/", format="parquet")
    done = cdp.backfill(fill, workers=2)
    assert (5, 5) == (done.partitions, done.written)
    assert _s3_tables(f"s3://{bucket}/fill") == want
    again = cdp.backfill(fill, workers=2)
    assert (0, 5) == (again.written, again.skipped)
    import s3fs

    manifest = json.loads(s3fs.S3FileSystem().cat_file(f"{bucket}/fill/_cdp_backfill.json"))
    assert [p["file"] for p in manifest["partitions"]] == list(want)
    serve_blocking(attrs.evolve(fill, end_ledger=LAST + 20, format="auto"))  # a live run goes on after the backfill
    assert list(_s3_tables(f"s3://{bucket}/fill"))[-1] == "contract_data-0000000100-0000000110.parquet"


def test_iceberg_on_s3_with_a_postgresql_catalog_backfilled_with_a_killed_worker_then_continued_live(
    store: Path,
    bucket: str,
    tmp_path: Path,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,
) -> None:
    pytest.importorskip("pyiceberg_core", reason="pyiceberg-core (the iceberg extra) is not installed")
    from cdp.sinks._lake import Target, close_catalog, open_catalog, referenced

    dsn = postgres.create_database("lake").replace("postgresql://", "postgresql+psycopg://")
    catalog = {"TYPE": "sql", "URI": dsn, "WAREHOUSE": f"s3://{bucket}/warehouse", "S3__ENDPOINT": s3_endpoint,
               "S3__ACCESS_KEY_ID": "cdp", "S3__SECRET_ACCESS_KEY": "cdp", "S3__REGION": "us-east-1"}  # fmt: skip
    for key, value in catalog.items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__PGLAKE__{key}", value)
    nowhere = tmp_path / "no-local-warehouse"
    config = _config(store, "iceberg://chain", iceberg_catalog="pglake", iceberg_warehouse=str(nowhere))
    jsonl = tmp_path / "rows.jsonl"
    serve_blocking(attrs.evolve(config, output=str(jsonl), format="jsonl", end_ledger=LAST + 30))
    want = [json.loads(line) for line in jsonl.read_text().splitlines()]

    markers = tmp_path / "markers"
    markers.mkdir()
    killing = KillingContractData(str(markers), GEN.passphrase, die_once=frozenset({45}))
    done = cdp.backfill(config, workers=2, processor=killing)
    assert (5, LAST - FIRST + 1) == (done.partitions, done.ledgers)
    assert {"45"} == {p.name for p in markers.iterdir()}  # the worker died there once; Dask ran it again
    catalog = open_catalog(config)
    table = catalog.load_table(Target.parse(config.output, "contract_data").identifier)
    assert table.location().startswith(f"s3://{bucket}/warehouse/")
    rows = _sorted_rows(table)
    assert rows == [r for r in want if r["ledger_sequence"] <= LAST]
    snapshots = len(table.snapshots())
    assert cdp.backfill(config, workers=2).partitions == 0
    table.refresh()
    assert snapshots == len(table.snapshots())

    serve_blocking(attrs.evolve(config, end_ledger=LAST + 30, iceberg_commit_ledgers=7))
    table.refresh()
    assert _sorted_rows(table) == want
    assert not nowhere.exists()  # everything went through the catalog database and S3
    import s3fs

    listed = {f"s3://{p}" for p in s3fs.S3FileSystem().find(f"{bucket}/warehouse") if not p.endswith("/")}
    assert listed <= referenced(table)  # no file left that no snapshot uses
    close_catalog(catalog)


def _sorted_rows(table: Any) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    data = table.scan().to_arrow()
    return cdp.rows_from_arrow(data.take(pc.sort_indices(data, [("ledger_sequence", "ascending")])))


@needs_shared
def test_real_pubnet_ledgers_as_parquet_on_s3_hold_the_jsonl_rows(bucket: str, tmp_path: Path) -> None:
    first, last = 63092982, 63092991
    store = tmp_path / "store"
    ledgers = [Ledger(s, None, (LEDGERS / f"pubnet-{s}.xdr").read_bytes()) for s in range(first, last + 1)]
    write_store(store, Manifest("Public Global Stellar Network ; September 2015", Layout(1, 4)), ledgers)
    config = _config(store, f"s3://{bucket}/pubnet/", start_ledger=first, end_ledger=last, network_passphrase="pubnet",
                     parquet_ledgers_per_file=4)  # fmt: skip
    jsonl = tmp_path / "rows.jsonl"
    serve_blocking(attrs.evolve(config, output=str(jsonl), format="jsonl"))
    want = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert want
    serve_blocking(config)
    files = _s3_tables(f"s3://{bucket}/pubnet")
    assert list(files) == [f"contract_data-{a:010d}-{b:010d}.parquet" for a, b in ((first, 63092983),
                           (63092984, 63092987), (63092988, last))]  # fmt: skip
    assert cdp.rows_from_arrow(pa.concat_tables(files.values())) == want
