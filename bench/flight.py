"""Arrow Flight's cost to the service (run by hand: `just bench-flight`); prints ratios, asserts nothing.

`cdp run` over the same synthetic pubnet-sized ledgers from the fake source, three times: no Flight
client; a fast client following from the first ledger (replay, then live, full schema); a slow client
that reads one batch a second on a 64 KiB window (it falls behind, is detached, catches up from the
output). The service's commit rate in each, and what the clients received, checked against the
JSONL output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import commit_rate, free_port, ledger_files  # noqa: E402


def client(port: int, first: int, last: int, slow: bool, out: dict[str, object]) -> None:
    import pyarrow.flight as flight

    options = [("grpc.http2.bdp_probe", 0)] if slow else []
    conn = flight.FlightClient(f"grpc://127.0.0.1:{port}", generic_options=options)
    ticket = json.dumps({"start_ledger": first, "end_ledger": last, "schema": "full"}).encode()
    rows = batches = 0
    t0 = time.perf_counter()
    for _ in range(100):  # the service may not listen yet
        try:
            reader = conn.do_get(flight.Ticket(ticket))
            break
        except flight.FlightUnavailableError:
            time.sleep(0.05)
    else:
        raise SystemExit("flight server never answered")
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        rows += chunk.data.num_rows
        batches += 1
        if slow and batches < 4:
            time.sleep(1.0)
    out.update(rows=rows, batches=batches, seconds=time.perf_counter() - t0)
    conn.close()


def run(kind: str, ledgers: Path, first: int, last: int, workdir: Path) -> float:
    out = workdir / f"{kind}.jsonl"
    out.unlink(missing_ok=True)
    flight_port = free_port()
    received: dict[str, object] = {}
    reader = None
    if kind != "none":
        reader = threading.Thread(target=client, args=(flight_port, first, last, kind == "slow", received))
        reader.start()
    log = workdir / f"{kind}.log"
    rate = commit_rate(ledgers, first, last, str(out), log, FLIGHT_PORT=str(flight_port), FLIGHT_HOST="127.0.0.1",
                       FLIGHT_CLIENT_BUFFER="64")  # fmt: skip
    rows = sum(1 for _ in out.open())
    if reader is not None:
        reader.join(timeout=60)
    note = ""
    if received:
        note = f"; client got {received['rows']} of {rows} rows in {received['batches']} batches"
    elif reader is not None:
        note = "; client did not finish before the service stopped (told where to resume)"
    overflows = log.read_text().count("flight client too slow")
    print(f"{kind:>5}: {rate:6.1f} ledgers/s committed{note}; buffer overflows: {overflows}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=300)
    args = parser.parse_args()
    ledgers, first, last = ledger_files(args.ledgers)
    workdir = ledgers.parent
    print(f"machine: {os.cpu_count()} cores; {args.ledgers} synthetic pubnet-sized ledgers")
    rates = {kind: run(kind, ledgers, first, last, workdir) for kind in ("none", "fast", "slow")}
    base = rates["none"]
    print(f"RESULT flight: commit rate with a fast client {rates['fast'] / base:.2f}x, with a slow client "
          f"{rates['slow'] / base:.2f}x of the rate without one")  # fmt: skip


if __name__ == "__main__":
    main()
