"""A long backfill on 2 workers (run by hand: `just bench-long-backfill`): does the rate hold over size,
and does a worker's memory stay flat?

50,000 (``--ledgers``) pubnet-sized ledgers in a 1-ledger-per-file store (SDF's layout). The store is
made once from bench/run.py's 1,000 synthetic ~1 MB ledgers, cycled: ledger ``s`` is synthetic ledger
``1000 + (s - 1000) % 1000`` with its header's sequence and close time rewritten to ``s``'s (checked by
reading the header back). The rows differ only in ``ledger_sequence``/``closed_at``; the work per
ledger is the same as over 50,000 distinct ledgers (building those takes 36 ms each here). Then
``cdp backfill --workers 2`` (the LocalCluster it starts; start-up included) while the RSS of every
process of its tree is sampled; rates per 10,000 ledgers come from the "partition done" log lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ledger_files  # noqa: E402

PASSPHRASE = "Test SDF Network ; September 2015"
WINDOW = 10_000


def resequenced(raw: bytes, sequence: int, close_time: int) -> bytes:
    """``raw`` with its header's sequence and close time replaced (found where ``peek_header`` reads them)."""
    from cdp.xdr._header import peek_header

    facts = peek_header(raw)
    at_close = raw.index(struct.pack(">Q", facts.close_time), 0, 400)
    at_seq = raw.index(struct.pack(">I", facts.sequence), at_close + 12, 800)
    out = bytearray(raw)
    out[at_close : at_close + 8] = struct.pack(">Q", close_time)
    out[at_seq : at_seq + 4] = struct.pack(">I", sequence)
    got = peek_header(bytes(out))
    assert (got.sequence, got.close_time) == (sequence, close_time), "header fields not where expected"
    return bytes(out)


def _write_part(args: tuple[Path, Path, int, int]) -> None:
    from cdp.extract import Ledger
    from cdp.upstream._layout import Layout, Manifest, write_store
    from cdp.xdr._header import peek_header

    ledgers, store, lo, hi = args
    bodies = {s: (ledgers / f"{s}.xdr").read_bytes() for s in range(1000, 2000)}
    step = peek_header(bodies[1001]).close_time - peek_header(bodies[1000]).close_time
    base = peek_header(bodies[1000]).close_time

    def made(s: int) -> Ledger:
        return Ledger(s, None, resequenced(bodies[1000 + (s - 1000) % 1000], s, base + (s - 1000) * step))

    write_store(store, Manifest(PASSPHRASE, Layout(1, 64000)), (made(s) for s in range(lo, hi + 1)))


def make_store(ledgers: Path, store: Path, count: int) -> None:
    done = store / f".complete-{count}"
    if done.exists():
        return
    shutil.rmtree(store, ignore_errors=True)
    last = 1000 + count - 1
    parts = [(ledgers, store, lo, min(lo + 4999, last)) for lo in range(1000, last + 1, 5000)]
    t0 = time.perf_counter()
    _write_part(parts[0])  # the manifest first, then the rest in parallel
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.map(_write_part, parts[1:])
    done.touch()
    print(f"store of {count} ledgers made in {time.perf_counter() - t0:.0f} s")


def tree(pid: int) -> dict[int, float]:
    """RSS in MB of ``pid`` and its descendants."""
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            out[p] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, AttributeError):
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledgers", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ledgers, _, _ = ledger_files(1000)
    store = ledgers.parent / "long-store"
    make_store(ledgers, store, args.ledgers)
    out = Path(tempfile.mkdtemp(prefix="cdp-long-"))
    last = 1000 + args.ledgers - 1
    env = {**os.environ, "DATASTORE_URL": str(store), "OUTPUT": f"{out}/", "NETWORK_PASSPHRASE": "testnet",
           "START_LEDGER": "1000", "END_LEDGER": str(last), "LOG_LEVEL": "INFO"}  # fmt: skip
    samples: list[tuple[float, dict[int, float]]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cdp", "backfill", "--workers", str(args.workers)], cwd=ROOT,
                                env=env, stderr=log, stdout=subprocess.DEVNULL)  # fmt: skip
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append((time.perf_counter() - t0, tree(proc.pid)))

        sampler = threading.Thread(target=sample)
        sampler.start()
        proc.wait()
        stop.set()
        sampler.join()
        wall = time.perf_counter() - t0
        log.seek(0)
        text = log.read()
    assert proc.returncode == 0, text[-2000:]
    shutil.rmtree(out)
    print(f"{args.ledgers} ledgers on {args.workers} workers: {wall:.1f} s with start-up, "
          f"{args.ledgers / wall:.0f} ledgers/s ({args.ledgers / wall / args.workers:.0f} per worker)")  # fmt: skip

    def stamp(text: str) -> float:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    done = [(stamp(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"^(\S+) .*partition done ledgers=\d+\.\.(\d+)", text, re.MULTILINE)]  # fmt: skip
    began = re.search(r"^(\S+) .*backfill started", text, re.MULTILINE)
    if done and began:
        start = stamp(began.group(1))
        windows: dict[int, list[float]] = {}
        for t, end in done:
            windows.setdefault((end - 1000) // WINDOW, []).append(t)
        edges = [start] + [max(ts) for _, ts in sorted(windows.items())]
        rates = [WINDOW / (b - a) for a, b in zip(edges, edges[1:], strict=False) if b > a]
        print("ledgers/s per 10,000-ledger window (from the cluster's start):", " ".join(f"{r:.0f}" for r in rates))
    main_pid = proc.pid
    workers = [(t, {p: mb for p, mb in s.items() if p != main_pid}) for t, s in samples]
    quarter = wall / 4
    first = max((max(s.values(), default=0) for t, s in workers if t < quarter), default=0)
    final = max((max(s.values(), default=0) for t, s in workers if t >= 3 * quarter), default=0)
    biggest = max((max(s.values(), default=0) for _, s in workers), default=0)
    print(f"RESULT long backfill: {args.ledgers / wall:.0f} ledgers/s on {args.workers} workers; largest worker-tree "
          f"process RSS {biggest:.0f} MB (first quarter {first:.0f} MB, last quarter {final:.0f} MB); "
          f"main process peak {max(s.get(main_pid, 0) for _, s in samples):.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
