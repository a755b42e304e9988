"""The limit benchmark (run by hand: `just bench-limit`); every path's rate as a ratio to the limit L.

L is what one core can do at best with a store's bytes: read each file, zstd-decompress it and extract
its rows (the compiled walker), nothing else, in ledgers/s. Over the same store, in the same run:
`cdp extract --datastore`, `cdp run --datastore` into JSONL, Parquet and PostgreSQL (commit rate between
its first and last progress lines), `cdp backfill` on one worker (a `LocalCluster` started beforehand;
best of two runs on it, as L is best of two passes: a worker's first partition also faults its heap
in), and `cdp run` over gRPC against a bare grpclib client draining the same `cdp fake-source`
(three interleaved pairs against one upstream, medians: single runs vary by a third on this machine).
Ledgers are pubnet-sized synthetic ones (~1 MB, 40 Soroban transactions; bench/run.py's), and L and
the backfill are also given for the shared real pubnet ledgers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backfill import warm_cluster  # noqa: E402
from run import ledger_files, progress_rate, raw_stream_rate, start_fake_source  # noqa: E402

PASSPHRASE = "Test SDF Network ; September 2015"
PUBNET = "Public Global Stellar Network ; September 2015"


def make_store(ledgers: Path, store: Path, first: int, last: int) -> None:
    from cdp.extract import Ledger
    from cdp.upstream._layout import Layout, Manifest, write_store

    if (store / ".config.json").exists():
        return
    write_store(store, Manifest(PASSPHRASE, Layout(1, 64000)),
                (Ledger(s, None, (ledgers / f"{s}.xdr").read_bytes()) for s in range(first, last + 1)))  # fmt: skip


def limit(store: Path, first: int, last: int, passphrase: str = PASSPHRASE) -> float:
    """Ledgers/s on one core: read, decompress and extract every ledger of the store (best of two)."""
    import zstandard

    from cdp._process import tune_gc, tune_malloc
    from cdp.extract import extract_rows_fast
    from cdp.upstream._layout import Layout

    tune_malloc()  # what the cdp command and backfill tasks run with
    tune_gc()
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # one core, as a backfill worker's

    layout = Layout(1, 64000)
    paths = [store / layout.key(s) for s in range(first, last + 1)]
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for path in paths:
            raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
            extract_rows_fast(_first_ledger(raw), passphrase, "compact")
        best = min(best, time.perf_counter() - t0)
    os.sched_setaffinity(0, cores)
    return len(paths) / best


def _first_ledger(batch: bytes) -> bytes:
    """The one LedgerCloseMeta of a 1-ledger LedgerCloseMetaBatch."""
    from cdp.xdr._files import split_batch

    return next(iter(split_batch(batch, "limit"))).raw


def pubnet_store(work: Path, count: int) -> Path | None:
    """A 1-ledger-per-file pubnet store of ``count`` ledgers cycled from the shared real pubnet ledgers
    over 100 KB (headers resequenced, as bench/long_backfill.py does), or None without them."""
    from long_backfill import resequenced

    from cdp.extract import Ledger
    from cdp.upstream._layout import Layout, Manifest, write_store
    from cdp.xdr._header import peek_header

    files = sorted(p for p in (ROOT.parent / "shared" / "ledgers").glob("pubnet-*.xdr") if p.stat().st_size > 100_000)
    if not files:
        return None
    store = work / f"limit-pubnet-{count}"
    if not (store / ".config.json").exists():
        bodies = [p.read_bytes() for p in files]
        base = peek_header(bodies[0]).close_time

        def made(s: int) -> Ledger:
            return Ledger(s, None, resequenced(bodies[s % len(bodies)], s, base + 5 * s))

        write_store(store, Manifest(PUBNET, Layout(1, 64000)), (made(s) for s in range(1000, 1000 + count)))
    return store


def shared_limit() -> str:
    """L over the shared real pubnet ledgers (raw files: no decompression), for comparison."""
    from cdp.extract import extract_rows_fast

    files = sorted((ROOT.parent / "shared" / "ledgers").glob("pubnet-*.xdr"))
    if not files:
        return "the shared pubnet ledgers are not here"
    raws = [p.read_bytes() for p in files]
    t0 = time.perf_counter()
    for _ in range(5):
        for raw in raws:
            extract_rows_fast(raw, "Public Global Stellar Network ; September 2015", "compact")
    rate = 5 * len(raws) / (time.perf_counter() - t0)
    size = sum(map(len, raws)) / len(raws) / 1e6
    return f"{rate:.0f} ledgers/s over {len(raws)} real pubnet ledgers ({size:.2f} MB on average)"


def extract_rate(store: Path, first: int, last: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cdp", "extract", "--datastore", str(store), "--network", "testnet",
                    "--start-ledger", str(first), "--end-ledger", str(last)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return (last - first + 1) / (time.perf_counter() - t0)


def backfill_rate(store: Path, out: Path, first: int, last: int, network: str = "testnet") -> float:
    """Ledgers/s of `cdp backfill` on one pinned worker: the better of two runs into a fresh output."""
    import cdp

    config = cdp.Config.from_mapping({"datastore_url": str(store), "network_passphrase": network,
                                      "start_ledger": first, "end_ledger": last, "output": f"{out}/"})  # fmt: skip
    best = float("inf")
    with warm_cluster(1) as client:
        for _ in range(2):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            cdp.backfill(config, client=client)
            best = min(best, time.perf_counter() - t0)
    return (last - first + 1) / best


def grpc_pairs(ledgers: Path, out: Path, first: int, last: int, pairs: int = 3) -> tuple[float, float, float]:
    """Medians of the bare grpclib drain and of `cdp run` (default settings, JSONL), interleaved against
    one `cdp fake-source`; and the drain's MB/s."""
    drains: list[tuple[float, float]] = []
    runs: list[float] = []
    fake, port = start_fake_source(ledgers)
    try:
        for _ in range(pairs):
            drains.append(raw_stream_rate(port, first, last))
            (out / "grpc.jsonl").unlink(missing_ok=True)
            env = {"SOURCE_ENDPOINT": f"127.0.0.1:{port}", "OUTPUT": str(out / "grpc.jsonl")}
            runs.append(_progress_run(env, first, last))
    finally:
        fake.kill()
        fake.wait()
    return statistics.median(d for d, _ in drains), statistics.median(runs), statistics.median(m for _, m in drains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=1000)
    args = parser.parse_args()
    ledgers, first, last = ledger_files(args.ledgers)
    work = ledgers.parent
    store = work / f"limit-store-{args.ledgers}"
    make_store(ledgers, store, first, last)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.ledgers} ledgers of ~1 MB")
    lim = limit(store, first, last)
    print(f"L (one core: read + zstd + extract): {lim:.0f} ledgers/s; real pubnet: {shared_limit()}")
    rates: dict[str, float] = {"cdp extract --datastore": extract_rate(store, first, last)}
    env = {"DATASTORE_URL": str(store), "LOG_LEVEL": "INFO"}
    out = work / "limit-out"
    out.mkdir(exist_ok=True)
    (out / "rows.jsonl").unlink(missing_ok=True)
    rates["cdp run --datastore (JSONL)"] = _progress_run({**env, "OUTPUT": str(out / "rows.jsonl")}, first, last)
    rates["cdp run --datastore (Parquet)"] = _parquet_run(env, out, first, last)
    rates["cdp run --datastore (PostgreSQL)"] = _postgres_run(env, work, first, last)
    rates["cdp backfill, 1 worker"] = backfill_rate(store, out / "backfill", first, last)
    for name, rate in rates.items():
        print(f"RESULT {name}: {rate:.0f} ledgers/s = {rate / lim:.2f} L")
    pub = pubnet_store(work, 2000)
    if pub is not None:
        lim_pub = limit(pub, 1000, 2999, PUBNET)
        rate = backfill_rate(pub, out / "backfill-pubnet", 1000, 2999, "pubnet")
        print(f"real pubnet ledgers (16 shared files over 100 KB, cycled to 2,000): L {lim_pub:.0f} ledgers/s; "
              f"RESULT cdp backfill, 1 worker, pubnet: {rate:.0f} ledgers/s = {rate / lim_pub:.2f} L")  # fmt: skip
    bare, grpc, mb = grpc_pairs(ledgers, out, first, last)
    print(f"RESULT cdp run over gRPC: {grpc:.0f} ledgers/s = {grpc / bare:.2f}x the bare grpclib drain "
          f"({bare:.0f} ledgers/s, {mb:.0f} MB/s) = {grpc / lim:.2f} L (medians of 3 interleaved pairs)")  # fmt: skip


def _parquet_run(env: dict[str, str], out: Path, first: int, last: int) -> float:
    directory = out / "parquet"
    shutil.rmtree(directory, ignore_errors=True)
    (out / "cp.json").unlink(missing_ok=True)
    return _progress_run({**env, "OUTPUT": f"{directory}/", "CHECKPOINT_PATH": str(out / "cp.json")}, first, last)


def _postgres_run(env: dict[str, str], work: Path, first: int, last: int) -> float:
    from tests.pg_server import PostgresServer, _bindir

    bindir = _bindir()
    if bindir is None:
        print("(no PostgreSQL binaries: the PostgreSQL path is not measured)")
        return float("nan")
    server = PostgresServer(bindir, durable=True)
    try:
        server.init()
        server.start()
        dsn = server.create_database("limit")
        return _progress_run({**env, "OUTPUT": dsn}, first, last)
    finally:
        server.close()


def _progress_run(env: dict[str, str], first: int, last: int) -> float:
    """`cdp run` over first..last: ledgers/s between its first and last progress lines."""
    environ = {**os.environ, "HEALTH_PORT": "0", "PROGRESS_EVERY": "5", "NETWORK_PASSPHRASE": "testnet",
               "LOG_LEVEL": "INFO", "START_LEDGER": str(first), "END_LEDGER": str(last), **env}  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        subprocess.run([sys.executable, "-m", "cdp", "run"], cwd=ROOT, env=environ, stderr=log, check=True)
        log.seek(0)
        return progress_rate(log.read())


if __name__ == "__main__":
    main()
