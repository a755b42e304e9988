"""Bootstrap at scale (run by hand: `just bench-bootstrap [ENTRIES]`); prints time per million entries
and the peak RSS of the `cdp bootstrap` process.

A synthetic archive of ENTRIES contract-data entries (default 10,000,000; each with its TTL entry,
and one in ten deleted again by a newer bucket) is spread over ten buckets at levels 0..4; the
bootstrap writes its state to a Parquet file. Entries are made from one template (a balance-like
`vec` key of 32 random bytes, an i128 value), so making them costs no sdk call per entry.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINT = 127
MARK = b"\xaa" * 32


def template() -> tuple[bytes, int, int]:
    """A contract-data LedgerEntry with 32 marker bytes in its key; where they are, and where its key ends."""
    from stellar_sdk import xdr

    contract = xdr.SCAddress(
        xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=xdr.ContractID(xdr.Hash(b"\x07" * 32))
    )
    key = xdr.SCVal(
        xdr.SCValType.SCV_VEC,
        vec=xdr.SCVec(
            [
                xdr.SCVal(xdr.SCValType.SCV_SYMBOL, sym=xdr.SCSymbol(b"Item")),
                xdr.SCVal(xdr.SCValType.SCV_BYTES, bytes=xdr.SCBytes(MARK)),
            ]
        ),
    )
    val = xdr.SCVal(xdr.SCValType.SCV_I128, i128=xdr.Int128Parts(xdr.Int64(0), xdr.Uint64(123456789)))
    cd = xdr.ContractDataEntry(xdr.ExtensionPoint(0), contract, key, xdr.ContractDataDurability.PERSISTENT, val)
    entry = xdr.LedgerEntry(xdr.Uint32(100), xdr.LedgerEntryData(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=cd),
                            xdr.LedgerEntryExt(0)).to_xdr_bytes()  # fmt: skip
    at = entry.index(MARK)
    key_end = 12 + len(contract.to_xdr_bytes()) + len(key.to_xdr_bytes()) + 4
    return entry, at, key_end


def make_archive(root: Path, entries: int) -> None:
    from cdp.testing import SyntheticLedgers
    from cdp.testing._archive import write_bucket, write_checkpoint

    entry, at, key_end = template()
    init, dead = (2).to_bytes(4, "big"), (1).to_bytes(4, "big")
    per_bucket = entries // 10
    names = []
    t0 = time.perf_counter()
    for b in range(10):
        plain = bytearray()  # record-marked as it grows: millions of records are not held as a list
        for i in range(b * per_bucket, (b + 1) * per_bucket if b < 9 else entries):
            e = entry[:at] + hashlib.sha256(i.to_bytes(8, "big")).digest() + entry[at + 32 :]
            ledger_key = (6).to_bytes(4, "big") + e[12:key_end]
            ttl = (
                (100).to_bytes(4, "big")
                + (9).to_bytes(4, "big")
                + hashlib.sha256(ledger_key).digest()
                + (10_000).to_bytes(4, "big")
                + b"\x00\x00\x00\x00"
            )
            for record in (init + e, init + ttl):
                plain += (0x80000000 | len(record)).to_bytes(4, "big") + record
        if b == 0:  # the newest bucket also deletes one key in ten of the older ones
            for i in range(per_bucket, entries, 10):
                e = entry[:at] + hashlib.sha256(i.to_bytes(8, "big")).digest() + entry[at + 32 :]
                record = dead + (6).to_bytes(4, "big") + e[12:key_end]
                plain += (0x80000000 | len(record)).to_bytes(4, "big") + record
        names.append(write_bucket(root, bytes(plain), level=1))
    write_checkpoint(root, SyntheticLedgers(), CHECKPOINT, [(names[2 * i], names[2 * i + 1]) for i in range(5)])
    print(f"(wrote an archive of {entries:,} entries in {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", type=int, nargs="?", default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdp-bench-bootstrap-") as tmp:
        archive = Path(tmp) / "archive"
        make_archive(archive, args.entries)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "cdp", "bootstrap", "--archive", str(archive), "--ledger", str(CHECKPOINT),
               "--output", f"{tmp}/out/"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        live = args.entries - len(range(args.entries // 10, args.entries, 10))
        print(done.stderr.strip().splitlines()[-1])
        print(f"entries={args.entries:,} live={live:,} seconds={seconds:.1f} "
              f"seconds_per_million={seconds / args.entries * 1e6:.1f} peak_rss_mb={peak_mb:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
