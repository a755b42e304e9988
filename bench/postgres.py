"""PostgreSQL sink throughput against the JSONL sink (run by hand: `just bench-postgres`); prints ratios.

`cdp run` over the same 300 synthetic pubnet-sized ledgers from the fake source, into a JSONL file
(fsync per group) and into a PostgreSQL server started here from the machine's binaries with fsync on
(Unix socket in a temp directory); commit rates between the first and last progress lines.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import ROOT, make_ledgers, start_fake_source  # noqa: E402

from tests.pg_server import PostgresServer, _bindir  # noqa: E402


def commit_rate(ledgers: Path, first: int, last: int, output: str, log: Path) -> float:
    fake, port = start_fake_source(ledgers)
    try:
        env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "PROGRESS_EVERY": "5",
               "OUTPUT": output}  # fmt: skip
        with log.open("w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "cdp", "run", "--start-ledger", str(first), "--end-ledger",
                                     str(last)], cwd=ROOT, env=env, stderr=log_file)  # fmt: skip
            marks: dict[int, float] = {}
            while proc.poll() is None:
                for m in re.finditer(r"progress ledger=(\d+)", log.read_text()):
                    marks.setdefault(int(m.group(1)), time.perf_counter())
                time.sleep(0.02)
        assert proc.returncode == 0, log.read_text()
        (a, ta), (b, tb) = min(marks.items()), max(marks.items())
        return (b - a) / (tb - ta)
    finally:
        fake.kill()
        fake.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb) not found: apt-get install postgresql")
    workdir = Path(os.environ.get("CDP_BENCH_DIR", "/tmp/cdp-bench"))
    ledgers = workdir / "ledgers"
    ledgers.mkdir(parents=True, exist_ok=True)
    first, last = 1000, 1000 + args.ledgers - 1
    make_ledgers(ledgers, first, args.ledgers)
    server = PostgresServer(bindir, durable=True)
    server.init()
    server.start()
    try:
        print(f"machine: {os.cpu_count()} cores; {args.ledgers} synthetic pubnet-sized ledgers; PostgreSQL fsync on")
        ratios = []
        for attempt in range(args.repeat):
            out = workdir / "pg-bench.jsonl"
            out.unlink(missing_ok=True)
            jsonl = commit_rate(ledgers, first, last, str(out), workdir / "pg-bench-jsonl.log")
            dsn = server.create_database(f"bench{attempt}")
            pg = commit_rate(ledgers, first, last, dsn, workdir / "pg-bench-pg.log")
            rows = sum(1 for _ in out.open())
            ratios.append(pg / jsonl)
            print(f"run {attempt + 1}: JSONL {jsonl:.1f} ledgers/s, PostgreSQL {pg:.1f} ledgers/s ({rows} rows): "
                  f"{pg / jsonl:.2f}x")  # fmt: skip
        print(f"RESULT postgres: {sorted(ratios)[len(ratios) // 2]:.2f}x the JSONL sink's commit rate (target >= 0.8x)")
    finally:
        server.close()


if __name__ == "__main__":
    main()
