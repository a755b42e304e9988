"""Kill one worker process of `cdp run` at a random moment, N times, and compare each output with a
clean run's (issue 13's acceptance check; run by hand: `python bench/worker_kill.py`).

Each run streams LEDGERS synthetic ledgers from a fake source in its own process with process
workers; after a random number of commits one worker (a trio-parallel spawn child) gets SIGKILL,
as the OOM killer would send it. Policies alternate between stop and skip.
"""

from __future__ import annotations

import argparse
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

from tests.helpers import CDP, FakeSourceProcess  # noqa: E402


def workers_of(pid: int) -> list[int]:
    """The trio-parallel worker processes among ``pid``'s children."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                out.append(int(child))
    return out


def run(
    endpoint: str, out: Path, last: int, policy: str, kill_after: int | None, rng: random.Random
) -> tuple[int, str]:
    env = {**os.environ, "SOURCE_ENDPOINT": endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "process",
           "OUTPUT": str(out / "out.jsonl"), "CHECKPOINT_PATH": str(out / "cp.json"), "END_LEDGER": str(last),
           "ON_BAD_LEDGER": policy, "DEAD_LETTER_PATH": str(out / "dead.jsonl"), "PROGRESS_EVERY": "1"}  # fmt: skip
    proc = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    commits = 0
    killed = False
    for line in proc.stderr:
        lines.append(line)
        if "progress ledger=" in line:
            commits += 1
            if kill_after is not None and not killed and commits >= kill_after:
                victims = workers_of(proc.pid)
                if victims:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    killed = True
    proc.wait()
    return proc.returncode, "".join(lines)


def group_stops(endpoint: str, tmp: Path, last: int, clean: bytes) -> None:
    """SIGTERM to the whole process group (as systemctl stop sends it) at 0.1 s, 1 s and mid-stream,
    then a resumed run: exit 0 both times, and the output equals the clean run's."""
    for moment in ("0.1", "1", "mid-stream"):
        d = tmp / f"group-{moment}"
        d.mkdir()
        env = {**os.environ, "SOURCE_ENDPOINT": endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "process",
               "OUTPUT": str(d / "out.jsonl"), "CHECKPOINT_PATH": str(d / "cp.json"), "END_LEDGER": str(last),
               "PROGRESS_EVERY": "1"}  # fmt: skip
        proc = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        assert proc.stderr is not None
        if moment == "mid-stream":
            for line in proc.stderr:
                if "progress ledger=400 " in line:
                    break
        else:
            time.sleep(float(moment))
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        stopped = proc.returncode
        resumed = subprocess.run([*CDP, "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        same = (d / "out.jsonl").read_bytes() == clean
        print(
            f"RESULT group SIGTERM at {moment}: exit {stopped}, traceback {'YES' if 'Traceback' in err else 'no'}, "
            f"resumed exit {resumed.returncode}, output {'identical' if same else 'DIFFERENT'}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ledgers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    last = 1 + args.ledgers
    fake = FakeSourceProcess("--seed", "3")
    fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clean_dir = Path(tmp) / "clean"
            clean_dir.mkdir()
            rc, _ = run(fake.endpoint, clean_dir, last, "stop", None, rng)
            assert rc == 0
            clean = (clean_dir / "out.jsonl").read_bytes()
            identical = 0
            for i in range(args.runs):
                policy = "stop" if i % 2 == 0 else "skip"
                d = Path(tmp) / f"run{i}"
                d.mkdir()
                kill_after = rng.randint(20, args.ledgers - 50)
                rc, log = run(fake.endpoint, d, last, policy, kill_after, rng)
                same = (d / "out.jsonl").read_bytes() == clean
                dead = (d / "dead.jsonl").exists()
                retried = log.count("worker process died")
                identical += same and rc == 0 and not dead
                print(f"run {i + 1}: policy={policy} kill after {kill_after} commits: exit {rc}, "
                      f"output {'identical' if same else 'DIFFERENT'}, dead letters {'YES' if dead else 0}, "
                      f"retries logged {retried}", flush=True)  # fmt: skip
            print(f"RESULT worker kills: {identical}/{args.runs} runs of {args.ledgers} ledgers identical to a clean "
                  "run, exit 0, no dead letter")  # fmt: skip
            group_stops(fake.endpoint, Path(tmp), last, clean)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
