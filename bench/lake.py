"""The lake (run by hand: `just bench-lake`); prints ratios, asserts only exact tables.

1. Live throughput into Iceberg on local disk (embedded SQLite catalog, default commit settings) against
   the local Parquet sink, the same ledgers in one run of this script, each sink twice, best of two.
2. A 2,000-ledger store (bench-backfill's) backfilled into an Iceberg table on S3 (SeaweedFS's `weed mini`
   on 127.0.0.1, a SQLite catalog) with 1 and with 2 worker processes of a `LocalCluster` started
   beforehand (start-up reported apart); then once more with a worker killed mid-partition: the table
   equals the others; a rerun adds no snapshot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backfill import bench_store, warm_cluster  # noqa: E402


def serve_seconds(store: Path, output: str, end: int, **kw: Any) -> float:
    import trio

    import cdp

    config = cdp.Config.from_mapping({"datastore_url": str(store), "network_passphrase": "testnet", "end_ledger": end,
                                      "output": output, "health_port": 0, "health_host": "127.0.0.1",
                                      "log_level": "WARNING", **kw})  # fmt: skip
    t0 = time.perf_counter()
    trio.run(cdp.serve, config)
    return time.perf_counter() - t0


def live(store: Path, work: Path, ledgers: int) -> None:
    print(f"\n== 1. live, {ledgers} ledgers: Iceberg (local warehouse) vs Parquet (local directory) ==")
    best: dict[str, float] = {}
    for attempt in range(2):
        for kind in ("parquet", "iceberg"):
            out = work / f"lake-live-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            output = f"{out}/" if kind == "parquet" else "iceberg://bench"
            extra = {"checkpoint_path": str(work / "lake-live.ckpt")} if kind == "parquet" else {}
            (work / "lake-live.ckpt").unlink(missing_ok=True)
            took = serve_seconds(store, output, ledgers + 1, iceberg_warehouse=str(out), **extra)
            best[kind] = min(best.get(kind, took), took)
            print(f"{kind} (run {attempt + 1}): {took:.2f} s = {ledgers / took:.0f} ledgers/s")
    print(f"RESULT live Iceberg / Parquet throughput: {best['parquet'] / best['iceberg']:.2f}x (target >= 0.8x)")


def table_rows(config: Any) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    import cdp

    data = cdp.lake_table(config).scan().to_arrow()
    return cdp.rows_from_arrow(data.take(pc.sort_indices(data, [("ledger_sequence", "ascending")])))


def backfill_on_s3(store: Path, work: Path, ledgers: int) -> None:
    import cdp
    from cdp.upstream._fs import start_fsspec_loop
    from tests.helpers import KillingContractData
    from tests.s3_server import weed_mini

    print(f"\n== 2. backfill of {ledgers} ledgers into Iceberg on S3, 100 per partition ==")
    data = work / "lake-seaweedfs"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    with weed_mini(data) as endpoint:
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "cdp", "AWS_SECRET_ACCESS_KEY": "cdp",
                           "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
        start_fsspec_loop()
        import s3fs

        s3fs.S3FileSystem().mkdir("lake")
        rates, tables = {}, {}
        for run, workers in (("one", 1), ("two", 2), ("killed", 2)):
            catalog = {"TYPE": "sql", "URI": f"sqlite:///{work}/lake-{run}.db", "WAREHOUSE": f"s3://lake/{run}",
                       "S3__ENDPOINT": endpoint, "S3__ACCESS_KEY_ID": "cdp", "S3__SECRET_ACCESS_KEY": "cdp",
                       "S3__REGION": "us-east-1"}  # fmt: skip
            Path(f"{work}/lake-{run}.db").unlink(missing_ok=True)
            os.environ.update({f"PYICEBERG_CATALOG__{run.upper()}__{k}": v for k, v in catalog.items()})
            config = cdp.Config.from_mapping({"datastore_url": str(store), "network_passphrase": "testnet",
                                              "end_ledger": ledgers + 1, "output": "iceberg://bench",
                                              "iceberg_catalog": run, "parquet_ledgers_per_file": 100,
                                              "iceberg_warehouse": str(work / "unused")})  # fmt: skip
            processor = None
            if run == "killed":
                markers = work / "lake-markers"
                shutil.rmtree(markers, ignore_errors=True)
                markers.mkdir()
                processor = KillingContractData(str(markers), config.network_passphrase, frozenset({1050}))
            t0 = time.perf_counter()
            with warm_cluster(workers) as client:
                up = time.perf_counter()
                summary = cdp.backfill(config, client=client, processor=processor)
                took = time.perf_counter() - up
            rates[run] = ledgers / took
            tables[run] = table_rows(config)
            print(f"{run}: {workers} worker(s), cluster up in {up - t0:.1f} s, backfill {took:.1f} s = "
                  f"{rates[run]:.1f} ledgers/s, {summary.rows} rows")  # fmt: skip
            if run == "killed":
                assert (work / "lake-markers" / "1050").exists(), "the worker was not killed"
                snapshots = len(cdp.lake_table(config).snapshots())
                again = cdp.backfill(config)
                assert again.partitions == 0
                assert snapshots == len(cdp.lake_table(config).snapshots()), "a rerun added a snapshot"
        assert tables["one"] == tables["two"] == tables["killed"], "the tables differ"
        print(f"RESULT lake backfill speed-up 2 workers / 1 worker: {rates['two'] / rates['one']:.2f}x "
              f"(target >= 1.7x); with a worker killed: {rates['killed'] / rates['one']:.2f}x; tables exact, "
              "a rerun adds no snapshot")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=2000)
    args = parser.parse_args()
    work, store = bench_store(args.ledgers)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    live(store, work, args.ledgers)
    backfill_on_s3(store, work, args.ledgers)


if __name__ == "__main__":
    main()
