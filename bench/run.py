"""Benchmarks for the performance targets (run by hand: `just bench`); prints ratios, asserts nothing.

1. Extraction, single core: full stellar-sdk decode + walk (the baseline, `cdp.extract._full.
   extract_rows`) against the fast path (`cdp.extract._fast.extract_rows_fast`) on the real pubnet
   ledgers of ../shared/ledgers, with the rows checked identical.
2. End to end over real gRPC on loopback: the fake source in its own process serves pubnet-sized
   synthetic ledgers (~1 MB, ~40 contract-data changes each) from files; first a bare client
   measures the raw stream rate, then `cdp run` with default settings processes the same range.
3. Peak RSS of the whole `cdp run` process tree (service + worker processes) during (2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CDP_SHARED_LEDGERS", ROOT.parent / "shared" / "ledgers"))
WARM_UP = 25  # ledgers before the end-to-end rates are timed (cdp run's first progress line)
sys.path.insert(0, str(ROOT))


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_extraction(repeat: int) -> None:
    from cdp.extract._fast import extract_rows_fast
    from cdp.extract._full import extract_rows

    index = {e["file"]: e for e in json.loads((SHARED / "index.json").read_text())}
    files = sorted(f for f, e in index.items() if e["network"] == "pubnet" and e["bytes"] > 100_000)
    print(f"\n== 1. extraction, single core (ms per ledger; best of {repeat}) ==")
    print(f"{'ledger':<24}{'MB':>6}{'rows':>6}{'full':>10}{'fast':>9}{'ratio':>8}")
    total_full = total_fast = 0.0
    bench_full = bench_fast = 0.0
    for f in files:
        raw = (SHARED / f).read_bytes()
        phrase = index[f]["passphrase"]
        rows, fell_back = extract_rows_fast(raw, phrase)
        assert rows == extract_rows(raw, phrase), f"{f}: fast rows differ"
        assert not fell_back, f"{f}: fast path fell back"
        full = best_of(partial(extract_rows, raw, phrase), repeat)
        fast = best_of(partial(extract_rows_fast, raw, phrase), repeat)
        total_full += full
        total_fast += fast
        if f.startswith("pubnet-630929"):
            bench_full += full
            bench_fast += fast
        print(f"{f:<24}{len(raw) / 1e6:>6.2f}{len(rows):>6}{full * 1e3:>10.1f}{fast * 1e3:>9.1f}{full / fast:>7.1f}x")
    print(f"RESULT extraction 63092982..91: baseline {bench_full * 100:.1f} ms/ledger, fast {bench_fast * 100:.1f} "
          f"ms/ledger, ratio {bench_full / bench_fast:.1f}x (target >= 20x)")  # fmt: skip
    print(f"RESULT extraction all {len(files)} pubnet files: ratio {total_full / total_fast:.1f}x")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ledgers(directory: Path, first: int, count: int) -> None:
    from cdp.testing._synthetic import SyntheticLedgers

    gen = SyntheticLedgers(seed=2026, soroban_txs=40, ledger_bytes=1_000_000)
    probe = directory / f"{first}.xdr"
    if probe.exists() and probe.read_bytes() != gen.ledger(first):  # made by another generator version
        for old in directory.glob("*.xdr"):
            old.unlink()
    for seq in range(first, first + count):
        path = directory / f"{seq}.xdr"
        if not path.exists():
            path.write_bytes(gen.ledger(seq))


def ledger_files(count: int) -> tuple[Path, int, int]:
    """``count`` synthetic pubnet-sized ledger files from 1000 on, made once under ``CDP_BENCH_DIR``."""
    workdir = Path(os.environ.get("CDP_BENCH_DIR", Path(tempfile.gettempdir()) / "cdp-bench"))
    ledgers = workdir / "ledgers"
    ledgers.mkdir(parents=True, exist_ok=True)
    make_ledgers(ledgers, 1000, count)
    return ledgers, 1000, 1000 + count - 1


def commit_rate(ledgers: Path, first: int, last: int, output: str, log: Path, **env: str) -> float:
    """`cdp run` over ``first..last`` served from ``ledgers`` into ``output``: ledgers/s between its first
    and last progress lines (commits only, not start-up or the wait for anything at the end)."""
    fake, port = start_fake_source(ledgers)
    try:
        environ = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "PROGRESS_EVERY": "5",
                   "OUTPUT": output, **env}  # fmt: skip
        with log.open("w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--start-ledger", str(first), "--end-ledger",
                                     str(last)], cwd=ROOT, env=environ, stderr=log_file)  # fmt: skip
            proc.wait()
        assert proc.returncode == 0, log.read_text()
        return progress_rate(log.read_text())
    finally:
        fake.kill()
        fake.wait()


def start_fake_source(ledgers: Path) -> tuple[subprocess.Popen[str], int]:
    """`cdp fake-source` serving the files in ``ledgers``, once it listens; (process, port)."""
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "cdp", "fake-source", "--port", str(port), "--ledgers",
                             str(ledgers)], cwd=ROOT, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert fake.stderr is not None
    for line in fake.stderr:
        if "listening" in line:
            break
    return fake, port


def raw_stream_rate(port: int, first: int, last: int) -> tuple[float, float]:
    """Ledgers/s and MB/s of a bare grpclib client (no processing) against the fake source."""
    import asyncio

    from grpclib.client import Channel

    from cdp.upstream.proto.raw_ledger_service import RawLedgerServiceStub, StreamLedgersRequest

    async def run() -> tuple[float, float]:
        channel = Channel("127.0.0.1", port)
        n = size = 0
        t0 = time.perf_counter()
        async for msg in RawLedgerServiceStub(channel).stream_raw_ledgers(StreamLedgersRequest(start_ledger=first)):
            if msg.sequence == first + WARM_UP - 1:  # the same window as cdp run's: after its first progress line
                n, size, t0 = 0, 0, time.perf_counter()
            else:
                n += 1
                size += len(msg.ledger_close_meta_xdr)
            if msg.sequence >= last:
                break
        dt = time.perf_counter() - t0
        channel.close()
        return n / dt, size / dt / 1e6

    return asyncio.run(run())


def tree_rss_mb(pid: int) -> float:
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, AttributeError):
            continue
    return total / 1024


def health_latency(port: int) -> float:
    """Seconds for one GET /health, or -1 if it did not answer."""
    import http.client

    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()
    except OSError:
        return -1.0
    return time.perf_counter() - t0


def run_cdp(port: int, first: int, last: int, workdir: Path) -> tuple[float, float, int, list[float]]:
    """``cdp run`` over the range: (ledgers/s after warm-up, peak RSS MB, rows, /health latencies)."""
    health_port = free_port()
    env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": str(health_port),
           "PROGRESS_EVERY": str(WARM_UP), "LOG_LEVEL": "INFO"}  # fmt: skip
    out = workdir / "rows.jsonl"
    out.unlink(missing_ok=True)
    log = workdir / "run.log"
    with log.open("w") as log_file:
        run = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--start-ledger", str(first),
                                "--end-ledger", str(last), "--output", str(out)], cwd=ROOT, env=env,
                               stderr=log_file)  # fmt: skip
        peak = 0.0
        marks: dict[int, float] = {}
        latencies: list[float] = []
        while run.poll() is None:
            peak = max(peak, tree_rss_mb(run.pid))
            if marks:  # workers busy: how long does /health take?
                latencies.append(health_latency(health_port))
            for m in re.finditer(r"progress ledger=(\d+)", log.read_text()):
                marks.setdefault(int(m.group(1)), time.perf_counter())
            time.sleep(0.05)
    assert run.returncode == 0, log.read_text()
    rows = sum(1 for _ in out.open())
    return progress_rate(log.read_text()), peak, rows, [x for x in latencies if x >= 0]


def progress_rate(log: str) -> float:
    """Ledgers/s between the first and the last progress line of a ``cdp run`` log, by the lines' own
    timestamps (not when a harness polling the file saw them, nor the process's exit)."""
    stamps = {int(m.group(2)): dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
              for m in re.finditer(r"^(\S+) .*progress ledger=(\d+)", log, re.MULTILINE)}  # fmt: skip
    (a, ta), (b, tb) = min(stamps.items()), max(stamps.items())
    return (b - a) / (tb - ta)


def bench_end_to_end(count: int, workdir: Path, pairs: int) -> None:
    first = 1000
    last = first + count - 1
    ledgers = workdir / "ledgers"
    ledgers.mkdir(exist_ok=True)
    print(f"\n== 2. end to end, {count} synthetic pubnet-sized ledgers over loopback gRPC ==")
    t0 = time.perf_counter()
    make_ledgers(ledgers, first, count)
    print(f"(ledger files ready in {time.perf_counter() - t0:.1f}s)")
    fake, port = start_fake_source(ledgers)
    try:
        mode = os.environ.get("WORKER_MODE", "auto")
        ratios, rates, peaks, latencies = [], [], [], []
        for attempt in range(1, pairs + 1):  # interleaved: this 2-core machine's noise is +-20%
            raw_rate, raw_mb = raw_stream_rate(port, first, last)
            rate, peak, rows, answered = run_cdp(port, first, last, workdir)
            ratios.append(rate / raw_rate)
            rates.append(rate)
            peaks.append(peak)
            latencies += answered
            print(f"pair {attempt}: raw stream {raw_rate:.1f} ledgers/s ({raw_mb:.0f} MB/s), cdp run "
                  f"(WORKER_MODE={mode}) {rate:.1f} ledgers/s after warm-up ({rows} rows): "
                  f"{rate / raw_rate:.2f}x")  # fmt: skip
        ratio, rate = sorted(ratios)[len(ratios) // 2], sorted(rates)[len(rates) // 2]
        print(
            f"RESULT end-to-end: median {rate:.1f} ledgers/s (target >= 30), median {ratio:.2f}x of the raw stream "
            f"rate (pairs: {', '.join(f'{r:.2f}x' for r in ratios)}); one day of pubnet (15,000 ledgers) in "
            f"{15000 / rate / 60:.1f} min"
        )
        print(f"RESULT memory: peak RSS of the cdp run process tree {max(peaks):.0f} MB (target < 300 MB)")
        answered = sorted(latencies)
        if answered:
            p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))]
            median = answered[len(answered) // 2]
            print(f"RESULT /health under full load: {len(answered)} requests, median {median * 1e3:.1f} ms, "
                  f"p99 {p99 * 1e3:.1f} ms, max {answered[-1] * 1e3:.1f} ms (target < 100 ms)")  # fmt: skip
    finally:
        fake.kill()
        fake.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ledgers", type=int, default=1000, help="ledgers for the end-to-end run")
    parser.add_argument("--pairs", type=int, default=3, help="raw-stream / cdp run pairs, interleaved")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-extraction", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.skip_extraction:
        pass
    elif (SHARED / "index.json").is_file():
        bench_extraction(args.repeat)
    else:
        print(f"(extraction bench skipped: no shared ledgers at {SHARED})")
    if not args.skip_e2e:
        cache = Path(os.environ.get("CDP_BENCH_DIR", Path(tempfile.gettempdir()) / "cdp-bench"))
        cache.mkdir(exist_ok=True)
        bench_end_to_end(args.ledgers, cache, args.pairs)


if __name__ == "__main__":
    main()
