"""Bounded resources: slow HTTP clients cannot starve the pipeline of file descriptors."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
from pathlib import Path

from ..helpers import CDP, ROOT, FakeSourceProcess
from .conftest import assert_ledger_by_ledger, clean_rows, committed_rows

FD_LIMIT = 128


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_a_flood_of_slow_http_clients_does_not_stop_the_pipeline(tmp_path: Path) -> None:
    """300 connections that never send a request, against a service limited to 128 descriptors: the
    connection cap keeps them out of its descriptor table and the run commits its whole range."""
    fake = FakeSourceProcess("--seed", "8", "--rate", "100")
    fake.start()
    env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_HOST": "127.0.0.1", "HEALTH_PORT": "0",
           "WORKER_MODE": "thread", "OUTPUT": str(tmp_path / "out.jsonl"), "CHECKPOINT_PATH": str(tmp_path / "cp.json"),
           "INSTANCE_EXTRAS": "false", "END_LEDGER": "80", "HTTP_MAX_CONNECTIONS": "8"}  # fmt: skip
    run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                           preexec_fn=_low_fd_limit)  # fmt: skip
    clients: list[socket.socket] = []
    try:
        assert run.stderr is not None
        port = 0
        for line in run.stderr:
            if "service started" in line:
                port = int(line.split("http_port=")[1].split()[0])
                break
        for _ in range(300):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))  # never sends a byte
            clients.append(client)
        _, stderr = run.communicate(timeout=120)
    finally:
        for client in clients:
            client.close()
        run.kill()
        run.communicate()
        fake.stop()
    assert 0 == run.returncode, stderr
    assert "Too many open files" not in stderr
    assert_ledger_by_ledger(committed_rows(tmp_path / "out.jsonl"), clean_rows(2, 80))
