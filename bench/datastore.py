"""Datastore benchmarks (run by hand: `just bench-datastore`); prints ratios, asserts only equal rows.

1. Speed: the same pubnet-sized synthetic ledgers (~1 MB, 40 Soroban txs each) as raw XDR files and as
   SEP-54 stores of 1 and 64 ledgers per file; `cdp extract` over each (files, and `--datastore` ranges)
   and `cdp run` from each (the raw files through `cdp fake-source` over loopback gRPC, the stores
   with `--datastore-url`). Every output is checked byte-identical to the raw files' one.
2. Memory: peak RSS of the `cdp run` process tree reading a 10,000-ledger synthetic store, against the
   same run over its first 1,000 ledgers: bounded means it does not grow with the range.
3. Live follow: `cdp run --datastore-url` waiting at the end of a store; files appear one by one at
   random moments; how long from a file's appearance to its ledger's commit, against the poll interval.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import free_port, make_ledgers, tree_rss_mb  # noqa: E402

CDP = [sys.executable, "-m", "cdp"]
FIRST = 1000
PASSPHRASE = "Test SDF Network ; September 2015"


def cdp(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([*CDP, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"cdp {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def timed_extract(args: list[str], repeat: int) -> tuple[float, str]:
    """Best wall time of `cdp extract ARGS` (interpreter start-up included, as a user sees it)."""
    best, out = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = cdp("extract", "--network", "testnet", *args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def timed_run(env: dict[str, str], out: Path, first: int, last: int) -> tuple[float, float, str]:
    """`cdp run` over first..last: ledgers/s from its first commit to its exit, and the tree's peak RSS."""
    out.unlink(missing_ok=True)
    (out.parent / "cp.json").unlink(missing_ok=True)
    env = {**os.environ, "HEALTH_PORT": "0", "PROGRESS_EVERY": "1", "NETWORK_PASSPHRASE": "testnet",
           "START_LEDGER": str(first), "END_LEDGER": str(last), "OUTPUT": str(out), **env}  # fmt: skip
    log = out.with_suffix(".log")
    peak, start_seq, start_t = 0.0, 0, 0.0
    with log.open("w") as log_file:
        proc = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=log_file)
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(proc.pid))
            if not start_seq and (m := re.search(r"progress ledger=(\d+)", log.read_text())):
                start_seq, start_t = int(m[1]), time.perf_counter()
            time.sleep(0.05)
    end = time.perf_counter()
    if proc.returncode:
        raise SystemExit(f"cdp run failed:\n{log.read_text()}")
    return (last - start_seq) / (end - start_t), peak, out.read_text()


def bench_speed(work: Path, count: int, repeat: int) -> None:
    last = FIRST + count - 1
    raw = work / "ledgers"
    raw.mkdir(exist_ok=True)
    make_ledgers(raw, FIRST, count)
    files = [str(raw / f"{s}.xdr") for s in range(FIRST, last + 1)]
    stores = {}
    for per_file in (1, 64):
        store = work / f"store-{per_file}-{count}"
        if not store.exists():
            cdp("datastore", "write", str(store), *files, "--network", "testnet", "--ledgers-per-file", str(per_file))
        stores[per_file] = store
    size = sum(Path(f).stat().st_size for f in files) / 1e6
    packed = {n: sum(p.stat().st_size for p in s.rglob("*.xdr.zst")) / 1e6 for n, s in stores.items()}
    print(f"\n== 1. speed: {count} ledgers, {size:.0f} MB raw; stores {packed[1]:.0f} MB (1/file), "
          f"{packed[64]:.0f} MB (64/file) ==")  # fmt: skip

    base, expected = timed_extract(files, repeat)
    print(f"cdp extract raw files:       {base:6.2f} s  {count / base:6.1f} ledgers/s")
    for per_file, store in stores.items():
        for how, args in (("files", [str(store)]),
                          ("--datastore", ["--datastore", str(store), "--start-ledger", str(FIRST),
                                           "--end-ledger", str(last)])):  # fmt: skip
            took, out = timed_extract(args, repeat)
            assert out == expected, f"{per_file}/file store via {how}: rows differ from the raw files'"
            print(f"cdp extract {per_file:>2}/file {how:<12} {took:6.2f} s  {count / took:6.1f} ledgers/s  "
                  f"{took / base:.2f}x the raw files' time")  # fmt: skip
            target = " (target <= 1.3x)" if per_file == 1 else ""
            print(f"RESULT datastore extract {per_file}/file via {how}: {took / base:.2f}x raw{target}")

    port = free_port()
    fake = subprocess.Popen([*CDP, "fake-source", "--port", str(port), "--ledgers", *files], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert fake.stderr is not None
        for line in fake.stderr:
            if "listening" in line:
                break
        rate, peak, expected_run = timed_run({"SOURCE_ENDPOINT": f"127.0.0.1:{port}"}, work / "run.jsonl", FIRST, last)
    finally:
        fake.kill()
        fake.wait()
    print(f"cdp run from raw files over gRPC: {rate:6.1f} ledgers/s, peak RSS {peak:.0f} MB")
    for per_file, store in stores.items():
        store_rate, peak, out = timed_run({"DATASTORE_URL": str(store)}, work / "run.jsonl", FIRST, last)
        assert out == expected_run, f"cdp run from the {per_file}/file store: rows differ"
        print(f"cdp run from the {per_file:>2}/file store:    {store_rate:6.1f} ledgers/s, peak RSS {peak:.0f} MB")
        print(f"RESULT datastore run {per_file}/file: {store_rate / rate:.2f}x the rate from raw files over gRPC")


def bench_memory(work: Path, count: int) -> None:
    store = work / f"synthetic-{count}"
    if not store.exists():
        t0 = time.perf_counter()
        cdp("datastore", "write", str(store), "--synthetic", "--start", "2", "--end", str(count + 1), "--network",
            "testnet", "--ledgers-per-file", "1")  # fmt: skip
        print(f"(wrote a {count}-ledger synthetic store in {time.perf_counter() - t0:.0f} s)")
    print(f"\n== 2. memory: cdp run over a {count}-ledger synthetic store (1 ledger per file) ==")
    small = max(2, count // 10)
    for last in (small + 1, count + 1):
        rate, peak, out = timed_run({"DATASTORE_URL": str(store)}, work / "memory.jsonl", 2, last)
        rows = out.count("\n")
        print(f"ledgers 2..{last}: {rate:.0f} ledgers/s, {rows} rows, peak RSS of the process tree {peak:.0f} MB")
        print(f"RESULT datastore memory {last - 1} ledgers: peak RSS {peak:.0f} MB")


def bench_live(work: Path, samples: int, poll: float) -> None:
    from cdp.extract import Ledger
    from cdp.testing import SyntheticLedgers
    from cdp.upstream._layout import Layout, Manifest, write_store

    gen = SyntheticLedgers(seed=3)
    store = work / "live"
    if store.exists():
        for path in sorted(store.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    manifest = Manifest(gen.passphrase, Layout(1, 64000))
    write_store(store, manifest, [Ledger(s, None, gen.ledger(s)) for s in range(2, 11)])
    print(f"\n== 3. live follow: {samples} files appearing at random moments, DATASTORE_POLL_INTERVAL_S={poll} ==")
    env = {**os.environ, "DATASTORE_URL": str(store), "DATASTORE_POLL_INTERVAL_S": str(poll), "HEALTH_PORT": "0",
           "PROGRESS_EVERY": "1", "NETWORK_PASSPHRASE": "testnet", "START_LEDGER": "2", "OUTPUT": os.devnull,
           "WORKER_MODE": "thread"}  # fmt: skip
    proc = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    rng = random.Random(7)
    delays = []
    try:
        lines = iter(proc.stderr)
        for line in lines:
            if "progress ledger=10 " in line:
                break
        for seq in range(11, 11 + samples):
            time.sleep(rng.uniform(0, poll))
            write_store(store, manifest, [Ledger(seq, None, gen.ledger(seq))])
            written = time.perf_counter()
            for line in lines:
                if f"progress ledger={seq} " in line:
                    delays.append(time.perf_counter() - written)
                    break
    finally:
        proc.terminate()
        proc.wait()
    print("appearance to commit, s: " + " ".join(f"{d:.2f}" for d in delays))
    print(f"RESULT datastore live follow: max {max(delays):.2f} s, mean {sum(delays) / len(delays):.2f} s "
          f"(target <= 2 poll intervals = {2 * poll:.1f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=200, help="pubnet-sized ledgers for the speed runs")
    parser.add_argument("--memory-ledgers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8, help="files written while following live")
    parser.add_argument("--poll", type=float, default=1.0, help="DATASTORE_POLL_INTERVAL_S for the live run")
    parser.add_argument("--only", choices=("speed", "memory", "live"), default=None)
    args = parser.parse_args()
    work = Path(os.environ.get("CDP_BENCH_DIR", Path(tempfile.gettempdir()) / "cdp-bench"))
    work.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; files in {work}")
    if args.only in (None, "speed"):
        bench_speed(work, args.ledgers, args.repeat)
    if args.only in (None, "memory"):
        bench_memory(work, args.memory_ledgers)
    if args.only in (None, "live"):
        bench_live(work, args.samples, args.poll)


if __name__ == "__main__":
    main()
