"""The compiled skippers under AddressSanitizer and UBSan (run by hand: `just fuzz-asan`).

Builds ``cdp/xdr/_cskip.c`` with ``-fsanitize=address,undefined`` into a temporary directory, loads
it in a Python started with libasan preloaded, and walks mutated ledgers (the mutations of
``bench/fuzz.py``) with it and with the Python skippers, the XDR bytes in place, and builds the rows
of those it vouches for (the compiled canonical checks): any memory error or undefined behaviour
aborts the run with the sanitizer's report; any disagreement (whole-ledger skips, ``c_SCVal`` from a
random word) is counted.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(out: Path) -> Path:
    lib = out / "_cskip_asan.so"
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=all", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / "cdp" / "xdr" / "_cskip.c"), "-o", str(lib)], check=True)  # fmt: skip
    return lib


def walk(lib: str, inputs: int, seed: int) -> None:
    """Load the sanitized build as ``cdp.xdr._cskip`` before anything imports it, so the whole fast
    path (skippers and ``scan_changes``) runs on it; compare its skippers with the Python ones."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("cdp.xdr._cskip", lib)
    spec = importlib.util.spec_from_file_location("cdp.xdr._cskip", lib, loader=loader)
    assert spec is not None
    ck = importlib.util.module_from_spec(spec)
    sys.modules["cdp.xdr._cskip"] = ck
    loader.exec_module(ck)

    from fuzz import _strict_outcome, _walk_outcome, mutate, seeds

    from cdp.extract._fast import _rows
    from cdp.extract._walk import read_raw_state
    from cdp.xdr import _skip
    from cdp.xdr._walker import WALKER

    assert WALKER == "compiled"
    corpus = seeds()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    walked = differ = vouched = 0
    for _ in range(inputs):
        raw, phrase = rng.choice(corpus)
        data = mutate(rng, raw)
        data = data[: len(data) // 4 * 4]
        w = _skip.words(data)
        walked += 1
        differ += _walk_outcome(_skip, w) != _walk_outcome(ck, w)
        at = rng.randrange(len(data) // 4 + 1) * 4
        differ += _strict_outcome(_skip, data, at) != _strict_outcome(ck, data, at)
        try:
            info, changes, _ = read_raw_state(data)
            vouched += 1
            _rows(data, info, changes, phrase, "changes")  # the compiled canonical checks of every row
        except Exception:  # the fast path refuses: the full decode answers (bench/fuzz.py checks that)
            pass
    dt = time.perf_counter() - t0
    print(f"asan: {walked} inputs in {dt:.0f}s ({vouched} walked whole by the compiled walk), "
          f"{differ} disagreements, no sanitizer report")  # fmt: skip
    print("RESULT fuzz-asan:", "PASS" if differ == 0 else "FAIL")
    sys.exit(1 if differ else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lib", default=None, help=argparse.SUPPRESS)  # the child run
    args = parser.parse_args()
    if args.lib:
        walk(args.lib, args.inputs, args.seed)
        return
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        ubsan = subprocess.run(["gcc", "-print-file-name=libubsan.so"], capture_output=True, text=True).stdout.strip()
        env = {**os.environ, "LD_PRELOAD": f"{asan} {ubsan}", "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}
        cmd = [sys.executable, __file__, "--lib", str(lib), "--inputs", str(args.inputs), "--seed", str(args.seed)]
        sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
