"""Read contract-data rows from a running ``cdp run`` over Arrow Flight, from a start ledger on, and
keep going across restarts of either side.

    FLIGHT_PORT=8816 OUTPUT=rows.jsonl CHECKPOINT_PATH=cp.json cdp run          # the service
    python examples/flight_consumer.py grpc://localhost:8816 --start-ledger 1000 --out mine.jsonl

Each record batch says which ledgers it covers (``app_metadata``: first and last ledger), so the
consumer knows where it stands. ``--out`` gets the rows as JSONL and ``--state`` (default: the out
file + ``.state``) the next ledger and the file size after it, written after the rows are synced:
killed at any point, the consumer truncates its file back to the state and asks the service for the
state's ledger, so every row lands exactly once. When the service goes away (a restart, a deploy) the
consumer retries with backoff from where it stands; an answer that retrying cannot change (the
ledger is no longer retained) ends it with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.flight as flight

import cdp


def load_state(path: Path, start: int) -> tuple[int, int]:
    if path.exists():
        state = json.loads(path.read_text())
        return int(state["next_ledger"]), int(state["offset"])
    return start, 0


def save_state(path: Path, next_ledger: int, offset: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"next_ledger": next_ledger, "offset": offset}))
    os.replace(tmp, path)


def consume(location: str, ticket: dict[str, object], out: Path, state: Path) -> int:
    """One connection: append rows and move the state batch by batch; the next ledger to ask for."""
    next_ledger = int(ticket["start_ledger"])  # type: ignore[call-overload]
    client = flight.FlightClient(location)
    try:
        reader = client.do_get(flight.Ticket(json.dumps(ticket).encode()))
        with out.open("ab") as sink:
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return next_ledger
                span = json.loads(chunk.app_metadata.to_pybytes())
                rows = cdp.rows_from_arrow(chunk.data)
                sink.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows))
                sink.flush()
                os.fsync(sink.fileno())
                next_ledger = span["last_ledger"] + 1
                save_state(state, next_ledger, sink.tell())
                print(f"ledgers {span['first_ledger']}..{span['last_ledger']}: {len(rows)} rows", flush=True)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("location", help="the service's Flight address, e.g. grpc://localhost:8816")
    parser.add_argument("--start-ledger", type=int, required=True)
    parser.add_argument("--end-ledger", type=int, default=0, help="stop after this ledger (0: follow forever)")
    parser.add_argument("--out", type=Path, required=True, help="rows as JSONL (appended)")
    parser.add_argument("--state", type=Path, default=None, help="where the consumer stands (default: OUT.state)")
    args = parser.parse_args()
    state = args.state or args.out.with_name(args.out.name + ".state")
    next_ledger, offset = load_state(state, args.start_ledger)
    with args.out.open("ab") as f:
        f.truncate(offset)  # rows written after the last saved state come again
    backoff = 0.5
    while not args.end_ledger or next_ledger <= args.end_ledger:
        ticket = {"start_ledger": next_ledger, "end_ledger": args.end_ledger, "schema": "full"}
        try:
            next_ledger = consume(args.location, ticket, args.out, state)
            backoff = 0.5
        except flight.FlightServerError as exc:
            sys.exit(f"flight_consumer: {str(exc).split('. Detail:')[0]}")
        except (flight.FlightUnavailableError, flight.FlightTimedOutError, flight.FlightCancelledError) as exc:
            next_ledger, _ = load_state(state, next_ledger)
            print(f"service unavailable ({str(exc).split('. Detail:')[0]}): retrying from ledger {next_ledger} "
                  f"in {backoff:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
    print(f"done: every row up to ledger {args.end_ledger}", flush=True)


if __name__ == "__main__":
    main()
