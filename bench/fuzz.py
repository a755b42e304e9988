"""Differential fuzzing of the extractor (run by hand: `just fuzz`): >= 1,000,000 mutated ledgers.

Each input is a real or synthetic ledger with 1-4 mutations (bit flips, interesting words such as
discriminants and huge counts, truncation, duplicated or dropped words). For every input:
- where the compiled skippers are built, they and the generated Python ones end the ledger at the
  same offset or refuse it at the same place for the same reason, and so do the compiled and Python
  canonical checks (``c_SCVal``) from a random word of it;
- the fast path either vouches for it and then its rows must equal the full decode's exactly, or
  it falls back, and then the full decode's answer is what users get;
- the only exception either path may raise is ``LedgerDecodeError`` (a clean per-ledger error).
Anything else is counted as a failure and the input is saved under $CDP_FUZZ_DIR for replay.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CDP_SHARED_LEDGERS", ROOT.parent / "shared" / "ledgers"))
OUT = Path(os.environ.get("CDP_FUZZ_DIR", "/tmp/cdp-fuzz"))
sys.path.insert(0, str(ROOT))

INTERESTING = [0, 1, 2, 3, 4, 5, 6, 9, 10, 15, 16, 17, 18, 19, 20, 21, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def seeds() -> list[tuple[bytes, str]]:
    from cdp.testing import SyntheticLedgers

    out = []
    gen = SyntheticLedgers(seed=99, soroban_txs=4)
    out += [(gen.ledger(s), gen.passphrase) for s in range(2, 12)]
    if (SHARED / "index.json").is_file():
        for e in json.loads((SHARED / "index.json").read_text()):
            if e["bytes"] <= 40_000 and (e["compact_rows"] or e["file"].startswith("testnet-14100")):
                out.append(((SHARED / e["file"]).read_bytes(), e["passphrase"]))
    return out


def mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        at = rng.randrange(len(b)) & ~3
        kind = rng.randrange(5)
        if kind == 0:
            b[min(at + rng.randrange(4), len(b) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[at : at + 4] = rng.choice(INTERESTING).to_bytes(4, "big")
        elif kind == 2:
            del b[at:]
        elif kind == 3:
            b[at:at] = b[at : at + 4 * rng.randint(1, 8)]
        else:
            del b[at : at + 4 * rng.randint(1, 8)]
    return bytes(b)


def _walk_outcome(module: object, w: object) -> tuple[object, ...]:
    from cdp.xdr._skip import SkipError

    try:
        return ("ok", module.s_LedgerCloseMeta(w, 0))  # type: ignore[attr-defined]
    except SkipError as exc:
        return ("refused", exc.what, exc.offset)
    except IndexError:
        return ("past the end",)


def _strict_outcome(module: object, data: bytes, at: int) -> tuple[object, ...]:
    """``c_SCVal`` (the canonical check rows rely on) from byte ``at``: its end, refusal or overrun."""
    import struct

    from cdp.xdr._skip import SkipError

    try:
        return ("ok", module.c_SCVal(data, at))  # type: ignore[attr-defined]
    except SkipError as exc:
        return ("refused", exc.what, exc.offset)
    except struct.error:
        return ("past the end",)


def worker(args: tuple[int, int, int]) -> dict[str, int]:
    worker_id, count, seed = args
    from cdp._errors import LedgerDecodeError
    from cdp.extract._fast import _rows
    from cdp.extract._full import extract_rows
    from cdp.extract._walk import read_raw_changes
    from cdp.xdr import _skip
    from cdp.xdr._walker import WALKER, skippers

    corpus = seeds()
    rng = random.Random(seed)
    stats = {"inputs": 0, "walkers_agree": 0, "fast_rows_equal": 0, "fast_fell_back": 0, "clean_errors": 0,
             "failures": 0}  # fmt: skip
    for i in range(count):
        raw, phrase = corpus[rng.randrange(len(corpus))]
        data = mutate(rng, raw)
        mode = "changes" if i % 2 else "compact"
        stats["inputs"] += 1
        try:
            if WALKER == "compiled" and len(data) % 4 == 0:
                w = _skip.words(data)
                if _walk_outcome(_skip, w) != _walk_outcome(skippers, w):
                    raise AssertionError("the compiled and Python skippers disagree")
                at = rng.randrange(len(data) // 4 + 1) * 4
                if _strict_outcome(_skip, data, at) != _strict_outcome(skippers, data, at):
                    raise AssertionError(f"the compiled and Python c_SCVal disagree at byte {at}")
                stats["walkers_agree"] += 1
            try:
                info, changes = read_raw_changes(data)
                fast = _rows(data, info, changes, phrase, mode)
            except Exception:  # extract_rows_fast falls back on anything the walk raises
                fast = None
                stats["fast_fell_back"] += 1
            try:
                reference = extract_rows(data, phrase, mode)
            except LedgerDecodeError:
                reference = None
                stats["clean_errors"] += 1
            if fast is not None:
                if fast != reference:
                    raise AssertionError("fast rows differ from the full decode's")
                stats["fast_rows_equal"] += 1
        except Exception as exc:  # a failure of the property: keep the input
            stats["failures"] += 1
            OUT.mkdir(parents=True, exist_ok=True)
            name = OUT / f"fail-{worker_id}-{i}.xdr"
            name.write_bytes(data)
            (OUT / f"fail-{worker_id}-{i}.txt").write_text(f"{type(exc).__name__}: {exc}\n")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    per = args.inputs // args.processes
    t0 = time.perf_counter()
    with multiprocessing.Pool(args.processes) as pool:
        results = pool.map(worker, [(w, per, args.seed + w) for w in range(args.processes)])
    total = {k: sum(r[k] for r in results) for k in results[0]}
    dt = time.perf_counter() - t0
    print(f"fuzz: {total['inputs']} inputs in {dt:.0f}s ({total['inputs'] / dt:.0f}/s) on {args.processes} processes")
    for key, value in total.items():
        print(f"  {key}: {value}")
    print("RESULT fuzz:", "PASS" if total["failures"] == 0 else f"FAIL, inputs saved in {OUT}")
    sys.exit(1 if total["failures"] else 0)


if __name__ == "__main__":
    main()
