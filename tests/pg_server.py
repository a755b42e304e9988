"""A real PostgreSQL server for the tests, listening only on a Unix socket in a temporary directory.

The binaries are the machine's (``initdb`` on PATH or under ``/usr/lib/postgresql/*/bin``; `.ci/run`
installs Debian's ``postgresql`` where they are missing). PostgreSQL refuses to run as root, so a
root test run starts it as the ``postgres`` user (or ``nobody``). The fixture reads the server's
log until it accepts connections; tests skip, saying why, where it cannot start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


class PostgresServer:
    def __init__(self, bindir: Path, durable: bool = False) -> None:
        """``durable``: fsync as in production (benchmarks); tests run without it, being faster."""
        self.bindir = bindir
        self.durable = durable
        self.base = Path(tempfile.mkdtemp(prefix="cdp-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.sock.mkdir()
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chmod(self.base, 0o755)
                for path in (self.base, self.sock):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                break
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def init(self) -> None:
        cmd = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "cdp", "--auth=trust", "-E", "UTF8",
               "--no-sync", "--locale=C"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True, user=self.user, timeout=120)

    def start(self) -> None:
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.sock), "-c", "listen_addresses=",
               "-c", "max_connections=50"]  # fmt: skip
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, user=self.user)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "ready to accept connections" in line:
                break
        else:
            raise RuntimeError("".join(self.log[-20:]))
        self._drainer = threading.Thread(target=self._drain, args=(self.proc,), daemon=True)
        self._drainer.start()

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.log.extend(proc.stderr)

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, as when a database is restarted for maintenance."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=60)
            self._drainer.join(timeout=2)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        self.proc = None

    def dsn(self, dbname: str) -> str:
        return f"postgresql://cdp@/{dbname}?host={self.sock}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb) not found: apt-get install postgresql")
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        server.close()
        pytest.skip(f"PostgreSQL did not start: {exc}")
    yield server
    server.close()
