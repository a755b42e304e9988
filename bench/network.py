"""What checking the network costs `cdp extract` on the shared pubnet ledgers (target: under 2%).

`cdp extract` proves the network once per invocation: one ledger's first envelope hashed under each
candidate, the results stepped over until the hash is met. This times, in this process, best of
--repeat: (a) the extraction `cdp extract` does for every shared pubnet ledger (processor and JSON
lines, the check excluded), (b) one check, as `cdp extract` makes it (on the first ledger with a
transaction), and prints (b)/(a); plus the wall time of the command itself, and what a check on
every ledger would cost (why it is made once per stream).

    python bench/network.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cdp._validators import AUTO, NETWORKS
from cdp.extract import Ledger
from cdp.extract._network import NetworkCheck
from cdp.processors import ContractDataProcessor
from cdp.sinks import dumps_row
from cdp.xdr._network import prove_network
from cdp.xdr._walker import WALKER

LEDGERS = Path(os.environ.get("CDP_SHARED_LEDGERS", Path(__file__).resolve().parents[2] / "shared" / "ledgers"))


def best(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    index = json.loads((LEDGERS / "index.json").read_text())
    files = sorted((e for e in index if e["network"] == "pubnet"), key=lambda e: e["sequence"])
    ledgers = [Ledger(e["sequence"], None, (LEDGERS / e["file"]).read_bytes()) for e in files]
    processor = ContractDataProcessor(NETWORKS["pubnet"])

    def extract() -> None:
        for ledger in ledgers:
            "".join(dumps_row(r) + "\n" for r in processor.process(ledger).rows)

    def check_once() -> None:
        check = NetworkCheck(AUTO)
        for ledger in ledgers:
            check.check(ledger.raw)
            if check.verified:
                return

    largest = max(ledgers, key=lambda x: len(x.raw))

    def check_largest() -> None:
        NetworkCheck(AUTO).check(largest.raw)

    def check_every() -> None:
        for ledger in ledgers:
            prove_network(ledger.raw, NETWORKS.values())

    extract_s = best(args.repeat, extract)
    once_s = best(args.repeat, check_once)
    largest_s = best(args.repeat, check_largest)
    every_s = best(args.repeat, check_every)
    paths = [str(LEDGERS / e["file"]) for e in files]
    command_s = best(3, lambda: subprocess.run([sys.executable, "-m", "cdp", "extract", *paths], check=True,
                                               capture_output=True))  # fmt: skip
    print(f"walker={WALKER} pubnet ledgers={len(ledgers)} ({sum(len(x.raw) for x in ledgers) / 1e6:.1f} MB)")
    print(f"extraction (processor + JSON lines): {extract_s * 1e3:.2f} ms; `cdp extract` command: {command_s:.2f} s")
    print(f"RESULT one network check: {once_s * 1e3:.3f} ms = {once_s / extract_s:.2%} of the extraction, "
          f"{once_s / command_s:.3%} of the command (target < 2%)")  # fmt: skip
    print(f"RESULT worst case, the check on the largest ledger ({largest.sequence}): {largest_s * 1e3:.3f} ms = "
          f"{largest_s / extract_s:.2%} of the extraction, {largest_s / command_s:.3%} of the command")  # fmt: skip
    print(f"a check on every ledger would cost {every_s * 1e3:.2f} ms = {every_s / extract_s:.1%} of the extraction")


if __name__ == "__main__":
    main()
