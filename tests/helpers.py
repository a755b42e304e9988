"""What the tests share: the `cdp` command, fake upstreams in process and out, small processors."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs

from cdp.extract import Ledger, Row

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
CDP = [sys.executable, "-m", "cdp"]
_LISTENING = re.compile(r"fake source listening .*port=(\d+)")


@attrs.frozen
class SequenceProcessor:
    """One row per ledger naming it, after a deterministic random delay (to scramble completion order)."""

    max_delay_s: float = 0.0
    fail_on: frozenset[int] = frozenset()
    name: str = "sequence"

    def process(self, ledger: Ledger) -> Sequence[Row]:
        if ledger.sequence in self.fail_on:
            raise ValueError(f"refusing ledger {ledger.sequence}")
        if self.max_delay_s:
            time.sleep(random.Random(ledger.sequence).uniform(0, self.max_delay_s))
        return [{"ledger_sequence": ledger.sequence, "bytes": len(ledger.raw)}]


class FakeSourceProcess:
    """`cdp fake-source` in its own process (so it can be killed): on port 0 the first time, with the
    bound port read back from its log, and on that same port when started again."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.port: int | None = None
        self._procs: list[tuple[subprocess.Popen[str], threading.Thread]] = []
        self.log: list[str] = []

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "start() first"
        return f"127.0.0.1:{self.port}"

    def start(self, *extra: str) -> subprocess.Popen[str]:
        """Start it and return once it listens (or has exited: then ``port`` stays as it was)."""
        cmd = [*CDP, "fake-source", "--port", str(self.port or 0), *self.args, *extra]
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match[1])
                break
        drain = threading.Thread(target=self._drain, args=(proc,), daemon=True)  # a full pipe would block it
        drain.start()
        self._procs.append((proc, drain))
        return proc

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.log.extend(proc.stderr)

    def stop(self) -> None:
        for proc, drain in self._procs:
            proc.kill()
            proc.wait()
            drain.join()
            assert proc.stderr is not None
            proc.stderr.close()
        self._procs.clear()


@contextmanager
def fake_source_process(*args: str) -> Iterator[FakeSourceProcess]:
    fake = FakeSourceProcess(*args)
    try:
        fake.start()
        yield fake
    finally:
        fake.stop()


def read_until_ready(stream: IO[str], ready: Callable[[str], T | None], what: str) -> tuple[T, threading.Thread]:
    """Read a starting process's log until ``ready(line)`` says it is (its answer returned), then go on
    reading it in a started thread (a full pipe would stall the process): join it once the process is
    stopped. A log that ends first is an AssertionError quoting its end.
    """
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        found = ready(line)
        if found:
            drain = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
            drain.start()
            return found, drain
    raise AssertionError(f"{what} did not start: {''.join(seen)[-2000:]}")


@contextmanager
def refusing_endpoint() -> Iterator[str]:
    """A loopback port that is bound but not listening, so connecting is refused, for as long as it is held."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@attrs.frozen
class WorkerKillingProcessor:
    """Kills its own worker process (SIGKILL, as the OOM killer would) on the ledgers in ``die_once``,
    the first time each is processed, and on ``die_always`` every time; ``markers`` records first times."""

    markers: str
    die_once: frozenset[int] = frozenset()
    die_always: frozenset[int] = frozenset()
    name: str = "worker_killing"

    def process(self, ledger: Ledger) -> Sequence[Row]:
        marker = Path(self.markers) / str(ledger.sequence)
        if ledger.sequence in self.die_always or (ledger.sequence in self.die_once and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return [{"ledger_sequence": ledger.sequence}]


@attrs.frozen
class KillingContractData:
    """The contract-data processor (its rows and columns), but killing its worker on ``die_once`` ledgers the
    first time each is processed, as ``WorkerKillingProcessor`` does."""

    markers: str
    passphrase: str
    die_once: frozenset[int] = frozenset()
    name: str = "contract_data"

    @property
    def columns(self) -> tuple[str, ...]:
        from cdp.processors import ContractDataProcessor

        return ContractDataProcessor(self.passphrase).columns

    def process(self, ledger: Ledger) -> Any:
        from cdp.processors import ContractDataProcessor

        WorkerKillingProcessor(self.markers, self.die_once).process(ledger)
        return ContractDataProcessor(self.passphrase).process(ledger)


def serve_blocking(config: Any, timeout_s: float = 120) -> None:
    """``cdp.serve(config)`` to its end from blocking test code (each call its own Trio run)."""
    import trio

    import cdp

    async def main() -> None:
        with trio.fail_after(timeout_s):
            await cdp.serve(config)

    trio.run(main)
