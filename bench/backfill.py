"""Backfill scaling (run by hand: `just bench-backfill`); prints ratios, asserts only equal outputs.

A 2,000-ledger synthetic store (40 Soroban transactions per ledger, padded to ~250 KB, 1 ledger per
file) is backfilled with 1 and with 2 worker processes of a `LocalCluster` started beforehand (its
start-up is reported apart), 100 ledgers per partition. Then the per-partition overhead: the same
200 ledgers as 200 partitions of 1 ledger against 2 of 100. Then a rerun of a finished job.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_store(count: int) -> tuple[Path, Path]:
    """``CDP_BENCH_DIR`` and a 1-ledger-per-file store of ``count`` ~250 KB synthetic ledgers in it
    (2..count+1), made once."""
    from cdp.extract import Ledger
    from cdp.testing import SyntheticLedgers
    from cdp.upstream._layout import Layout, Manifest, write_store

    work = Path(os.environ.get("CDP_BENCH_DIR", Path(tempfile.gettempdir()) / "cdp-bench"))
    work.mkdir(exist_ok=True)
    root = work / f"backfill-store-{count}"
    if (root / ".config.json").exists():
        return work, root
    gen = SyntheticLedgers(seed=2027, soroban_txs=40, ledger_bytes=250_000)
    t0 = time.perf_counter()
    ledgers = (Ledger(s, None, gen.ledger(s)) for s in range(2, count + 2))
    write_store(root, Manifest(gen.passphrase, Layout(1, 64000)), ledgers)
    print(f"(wrote a {count}-ledger store in {time.perf_counter() - t0:.0f} s)")
    return work, root


def config(store: Path, out: Path, first: int, last: int, per_file: int):  # type: ignore[no-untyped-def]
    from cdp import Config

    return Config.from_mapping({"datastore_url": str(store), "network_passphrase": "testnet", "start_ledger": first,
                                "end_ledger": last, "output": str(out), "format": "parquet",
                                "parquet_ledgers_per_file": per_file})  # fmt: skip


def pin_process(core: int) -> None:
    """Every thread of this process on ``core`` (affinity is per thread; new threads inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {core})


@contextlib.contextmanager
def warm_cluster(workers: int, pin: bool = True) -> Iterator[Any]:
    """A client of the LocalCluster `cdp backfill` would start, every worker up with the extractor loaded
    and, with ``pin``, on a core of its own (as workers are deployed: one core each), so a worker's
    rate is one core's, as L is."""
    from cdp.batch._run import client_for

    with client_for(None, None, workers) as (client, _):
        client.submit(int, 1).result()
        client.run(lambda: __import__("cdp.batch._task"))
        if pin:
            cores = sorted(os.sched_getaffinity(0))
            for i, address in enumerate(sorted(client.scheduler_info()["workers"])):
                client.run(pin_process, cores[i % len(cores)], workers=[address])
        yield client


def timed(workers: int, store: Path, out: Path, first: int, last: int, per_file: int) -> tuple[float, float]:
    """Seconds to start the cluster, and seconds for the backfill on it (a fresh output each time)."""
    import cdp

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with warm_cluster(workers) as client:
        started = time.perf_counter()
        summary = cdp.backfill(config(store, out, first, last, per_file), client=client)
        took = time.perf_counter() - started
    assert summary.ledgers == last - first + 1
    return started - t0, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=2000)
    args = parser.parse_args()
    work, store = bench_store(args.ledgers)
    first, last = 2, args.ledgers + 1
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")

    print(f"\n== 1. {args.ledgers} ledgers, 100 per partition, 1 vs 2 worker processes ==")
    rates = {}
    for workers in (1, 2):
        start, took = timed(workers, store, work / f"backfill-out-{workers}", first, last, 100)
        rates[workers] = args.ledgers / took
        print(
            f"{workers} worker(s): cluster up in {start:.1f} s, backfill {took:.1f} s = {rates[workers]:.1f} ledgers/s"
        )
    one, two = (sorted((work / f"backfill-out-{n}").glob("*.parquet")) for n in (1, 2))
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two], "1 and 2 workers wrote different files"
    print(f"RESULT backfill speed-up 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (target >= 1.7x); "
          f"{rates[2] / 2:.1f} ledgers/s per core")  # fmt: skip

    print("\n== 2. per-partition overhead: 200 ledgers as 200 partitions vs 2, 2 workers ==")
    _, many = timed(2, store, work / "backfill-many", first, first + 199, 1)
    _, few = timed(2, store, work / "backfill-few", first, first + 199, 100)
    print(f"200 partitions: {many:.2f} s, 2 partitions: {few:.2f} s")
    print(f"RESULT backfill per-partition overhead: {(many - few) / 198 * 1000 * 2:.0f} ms of worker time")

    print("\n== 3. a rerun of the finished job ==")
    import cdp

    t0 = time.perf_counter()
    again = cdp.backfill(config(store, work / "backfill-out-2", first, last, 100))
    print(f"RESULT backfill rerun: {time.perf_counter() - t0:.2f} s, {again.skipped} of {again.partitions} "
          f"partitions skipped, {again.written} written")  # fmt: skip


if __name__ == "__main__":
    main()
