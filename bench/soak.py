"""Soak (run by hand: `just soak`): stream for N minutes under random faults; count what survived.

A fake upstream (own process, synthetic ledgers at --rate) is restarted every few seconds with a
random fault: dying after some ledgers, aborting with UNAVAILABLE, stalling, skipping, duplicating,
reordering or mislabelling a ledger. Now and then `cdp run` itself is SIGKILLed and restarted from
its checkpoint. At the end the service is stopped with SIGTERM and its output is compared with a
clean extraction of every committed ledger: rows lost (or extra) must be 0. The RSS of the service's
process tree is sampled throughout; the first and last minutes' peaks show whether it grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import free_port, tree_rss_mb  # noqa: E402

CDP = [sys.executable, "-m", "cdp"]
SEED = 31


def random_fault(rng: random.Random, next_ledger: int) -> tuple[str, list[str]]:
    ahead = next_ledger + rng.randint(5, 60)
    return rng.choice(
        [
            ("die", ["--die-after", str(rng.randint(20, 200))]),
            ("abort", ["--fail-after", str(rng.randint(20, 200))]),
            ("stall", ["--stall-after", str(rng.randint(20, 200))]),
            ("skip", ["--skip", str(ahead)]),
            ("duplicate", ["--duplicate", str(ahead)]),
            ("reorder", ["--reorder", str(ahead)]),
            ("mislabel", ["--mislabel", str(ahead)]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=60.0, help="ledgers per second from the fake upstream")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cdp-soak-"))
    port = free_port()
    out, cp = work / "out.jsonl", work / "cp.json"
    env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "OUTPUT": str(out),
           "CHECKPOINT_PATH": str(cp), "START_LEDGER": "2", "INSTANCE_EXTRAS": "false", "IDLE_TIMEOUT_S": "1",
           "BACKOFF_BASE_S": "0.05", "BACKOFF_CAP_S": "0.5", "BREAKER_RESET_TIMEOUT_S": "1",
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    log = (work / "run.log").open("a")

    def start_service() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=log)

    faults: dict[str, int] = {}
    upstream: subprocess.Popen[bytes] | None = None
    service = start_service()
    end = time.monotonic() + args.minutes * 60
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    next_fault = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_fault:
            if upstream is not None:
                upstream.kill()
                upstream.wait()
            committed = json.loads(cp.read_text())["ledger"] if cp.exists() else 2
            name, flags = random_fault(rng, committed + 1)
            if rng.random() < 0.1:
                name = "service-kill"
                service.send_signal(signal.SIGKILL)
                service.wait()
                service = start_service()
                flags = []
            faults[name] = faults.get(name, 0) + 1
            upstream = subprocess.Popen([*CDP, "fake-source", "--port", str(port), "--seed", str(SEED), "--rate",
                                         str(args.rate), *flags], cwd=ROOT, stderr=subprocess.DEVNULL)  # fmt: skip
            next_fault = now + rng.uniform(2, 6)
        if service.poll() is not None:
            raise SystemExit(f"cdp run exited with {service.returncode}; see {work / 'run.log'}")
        samples.append((now - t0, tree_rss_mb(service.pid)))
        time.sleep(0.2)
    if upstream is not None:
        upstream.kill()
    service.send_signal(signal.SIGTERM)
    service.wait(timeout=15)

    from cdp.extract._full import extract_rows
    from cdp.extract._rows import ETL_FIELDS
    from cdp.sinks import dumps_row
    from cdp.testing._synthetic import SyntheticLedgers

    last = json.loads(cp.read_text())["ledger"]
    gen = SyntheticLedgers(seed=SEED)
    keep = (*ETL_FIELDS, "live_until_ledger_seq")
    want = [
        dumps_row({k: r[k] for k in keep})
        for s in range(2, last + 1)
        for r in extract_rows(gen.ledger(s), gen.passphrase)
    ]
    got = out.read_text().splitlines()
    lost = len(set(want) - set(got))
    extra = len(got) - len(want) + lost
    minute = 60.0
    first_peak = max((rss for t, rss in samples if t < minute), default=0.0)
    last_peak = max((rss for t, rss in samples if t > samples[-1][0] - minute), default=0.0)
    injected = sum(faults.values())
    print(f"soak: {args.minutes:g} min, {last - 1} ledgers delivered (2..{last}), {len(got)} rows")
    print(f"faults injected: {injected} {json.dumps(faults, sort_keys=True)}")
    survived = injected if lost == 0 and extra == 0 else "NOT ALL"
    print(f"faults survived: {survived}; rows lost: {lost}; rows extra: {extra}")
    print(f"peak RSS: first minute {first_peak:.0f} MB, last minute {last_peak:.0f} MB "
          f"({'no growth' if last_peak <= first_peak * 1.1 else 'GREW'})")  # fmt: skip
    print("RESULT soak:", "PASS" if lost == 0 and extra == 0 and got == want else "FAIL", f"(work dir {work})")


if __name__ == "__main__":
    main()
