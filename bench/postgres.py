"""PostgreSQL sink throughput against the JSONL sink (run by hand: `just bench-postgres`); prints ratios.

`cdp run` over the same 300 synthetic pubnet-sized ledgers from the fake source, into a JSONL file
(fsync per group) and into a PostgreSQL server started here from the machine's binaries with fsync on
(Unix socket in a temp directory); commit rates between the first and last progress lines.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import commit_rate, ledger_files  # noqa: E402

from tests.pg_server import PostgresServer, _bindir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb) not found: apt-get install postgresql")
    ledgers, first, last = ledger_files(args.ledgers)
    workdir = ledgers.parent
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
