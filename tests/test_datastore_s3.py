"""The datastore source against a real S3 API server (SeaweedFS on 127.0.0.1): the same rows as from the
same ledgers as raw files, a hole named by key, and standard AWS settings honoured unchanged."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

import cdp
from cdp._config import Config
from cdp._errors import UpstreamError
from cdp.extract import Ledger, Row, extract_rows
from cdp.sinks import dumps_row
from cdp.testing import SyntheticLedgers
from cdp.upstream._fs import start_fsspec_loop
from cdp.upstream._layout import MANIFEST, Layout, Manifest, write_store
from cdp.upstream._store import Datastore

GEN = SyntheticLedgers(seed=17)


@pytest.fixture
def s3_store(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> str:
    """A store written locally, then uploaded to its own bucket; s3fs configured only through AWS_* variables."""
    s3fs = pytest.importorskip("s3fs")
    start_fsspec_loop()  # as cdp does: fsspec's loop must not be a trio-asyncio one
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "cdp", "AWS_SECRET_ACCESS_KEY": "cdp",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    local = tmp_path / "store"
    write_store(local, Manifest(GEN.passphrase, Layout(4, 2)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 30)])
    bucket = request.node.name.lower().replace("_", "-")[:50]
    fs = s3fs.S3FileSystem()
    fs.mkdir(bucket)
    for path in local.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"{bucket}/testnet/{path.relative_to(local)}", path.read_bytes())
    return f"s3://{bucket}/testnet"


async def _run(config: Config) -> dict[int, Sequence[Row]]:
    got: dict[int, Sequence[Row]] = {}
    with trio.fail_after(120):
        await cdp.serve(config, on_rows=lambda seq, rows: got.__setitem__(seq, rows))
    return got


def _config(url: str, **kw: Any) -> Config:
    return Config.from_mapping({"datastore_url": url, "health_port": 0, "health_host": "127.0.0.1",
                                "worker_mode": "thread", "backoff_base_s": 0.01, **kw})  # fmt: skip


async def test_rows_from_s3_equal_rows_from_the_raw_ledgers(s3_store: str) -> None:
    got = await _run(_config(s3_store, start_ledger=3, end_ledger=26))
    want = {s: cdp.extract_rows(GEN.ledger(s), GEN.passphrase) for s in range(3, 27)}
    assert want == got


async def test_a_hole_on_s3_is_named_by_key(s3_store: str) -> None:
    import s3fs

    key = Layout(4, 2).key(13)
    s3fs.S3FileSystem().rm_file(f"{s3_store.removeprefix('s3://')}/{key}")
    with pytest.raises(UpstreamError, match=f"{key} is missing"):
        await _run(_config(s3_store, start_ledger=2, end_ledger=29))


async def test_the_manifest_is_read_from_s3(s3_store: str) -> None:
    import s3fs

    assert b"ledgersPerBatch" in s3fs.S3FileSystem().cat_file(f"{s3_store.removeprefix('s3://')}/{MANIFEST}")
    with pytest.raises(cdp.ConfigError, match="the store is for testnet, not NETWORK_PASSPHRASE=pubnet"):
        await _run(_config(s3_store, end_ledger=5, network_passphrase="pubnet"))


class CuttingProxy:
    """A TCP proxy to the S3 server that, on the ``cut_at``-th GET request, drops every connection and
    stops listening for ``outage_s`` seconds (connections refused: the server is down), then serves again."""

    def __init__(self, target: int, cut_at: int, outage_s: float, stall: bool = False) -> None:
        """``stall``: instead, from the ``cut_at``-th GET on, take requests and never answer them."""
        self.target, self.cut_at, self.outage_s, self.stall = target, cut_at, outage_s, stall
        self.gets = 0
        self.port = 0
        self.cut = trio.Event()
        self.restored = trio.Event()
        self._up: trio.CancelScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        while True:
            with trio.CancelScope() as self._up:
                listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                if not self.port:
                    self.port = listeners[0].socket.getsockname()[1]
                    task_status.started(self.port)
                else:
                    self.restored.set()
                await trio.serve_listeners(self._handle, listeners)
            await trio.sleep(self.outage_s)  # down: nothing listens on the port

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as server:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, count: bool) -> None:
                async for data in src:
                    if count:
                        self.gets += data.count(b"GET ")
                        if self.stall and self.gets >= self.cut_at:
                            self.cut.set()
                            await trio.sleep_forever()
                        if self.gets >= self.cut_at and not self.cut.is_set():
                            self.cut.set()
                            assert self._up is not None
                            self._up.cancel()
                            return
                    await dst.send_all(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server, True)
                nursery.start_soon(pump, server, client, False)


@pytest.mark.slow
async def test_a_30_second_s3_outage_mid_run_ends_exact_with_exit_0(
    s3_store: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """`cdp run --datastore s3://...` while S3 goes away for 30 s after a few files: the fetches ride
    it out with backoff, exit 0, every row exactly once."""
    import os

    from .helpers import CDP, ROOT

    proxy = CuttingProxy(int(s3_endpoint.rsplit(":", 1)[1]), cut_at=4, outage_s=30)
    out = tmp_path / "rows.jsonl"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "",
        "HEALTH_PORT": "0",
        "BACKOFF_BASE_S": "0.2",
        "BACKOFF_CAP_S": "2",
        "DATASTORE_TIMEOUT_S": "5",
    }  # a request cut mid-way is given up in 5 s, not 30
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.run)
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        cmd = [*CDP, "run", "--datastore", s3_store, "--start-ledger", "2", "--end-ledger", "29", "--output", str(out),
               "--checkpoint-path", str(tmp_path / "rows.ckpt"), "--datastore-fetch-workers", "1",
               "--datastore-prefetch-files", "1"]  # fmt: skip
        with trio.fail_after(120):
            proc = await trio.run_process(cmd, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False)
        nursery.cancel_scope.cancel()
    stderr = proc.stderr.decode()
    assert 0 == proc.returncode, stderr[-3000:]
    assert proxy.cut.is_set()
    assert proxy.restored.is_set()
    assert "datastore fetch failed" in stderr
    assert "Traceback" not in stderr
    want = [json.loads(dumps_row(r)) for s in range(2, 30) for r in extract_rows(GEN.ledger(s), GEN.passphrase)]
    assert want == [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
async def test_a_stop_does_not_wait_for_a_stalled_store(
    s3_store: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """S3 takes requests and never answers (a proxy that stalls): SIGTERM exits 0 within
    SHUTDOWN_GRACE_S + 5 s, the output at a ledger boundary; a rerun completes it exactly."""
    import os
    import signal
    import time

    from .helpers import CDP, ROOT

    proxy = CuttingProxy(int(s3_endpoint.rsplit(":", 1)[1]), cut_at=3, outage_s=0, stall=True)
    out, log = tmp_path / "rows.jsonl", tmp_path / "run.log"
    cmd = [*CDP, "run", "--datastore", s3_store, "--start-ledger", "2", "--end-ledger", "29", "--output", str(out),
           "--checkpoint-path", str(tmp_path / "rows.ckpt"), "--datastore-fetch-workers", "1",
           "--datastore-prefetch-files", "1"]  # fmt: skip
    env = {**os.environ, "HEALTH_PORT": "0", "SHUTDOWN_GRACE_S": "1"}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.run)
        with log.open("wb") as stderr:
            run = await trio.lowlevel.open_process(
                cmd, cwd=ROOT, env={**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}, stderr=stderr
            )
            with trio.fail_after(60):
                await proxy.cut.wait()
            run.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            with trio.fail_after(30):
                code = await run.wait()
            elapsed = time.monotonic() - t0
        nursery.cancel_scope.cancel()
    assert (0, True) == (code, elapsed < 1 + 5), (elapsed, log.read_text()[-2000:])
    with trio.fail_after(60):
        again = await trio.run_process(cmd, cwd=ROOT, env={**env, "AWS_ENDPOINT_URL": s3_endpoint}, check=False,
                                       capture_stderr=True)  # fmt: skip
    assert 0 == again.returncode, again.stderr.decode()[-2000:]
    want = [json.loads(dumps_row(r)) for s in range(2, 30) for r in extract_rows(GEN.ledger(s), GEN.passphrase)]
    assert want == [json.loads(line) for line in out.read_text().splitlines()]


def test_cdp_datastore_write_writes_to_s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cdp datastore write s3://bucket/prefix` puts the store on S3 (no local directory named `s3:`), and
    the store reads back as the same ledgers; a key that may only read is refused in one line, exit 1."""
    import os
    import subprocess

    import s3fs

    from .helpers import CDP

    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "cdp", "AWS_SECRET_ACCESS_KEY": "cdp",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "cdp")
    s3fs.S3FileSystem().mkdir("written-by-cdp")
    url = "s3://written-by-cdp/testnet"
    cmd = [*CDP, "datastore", "write", url, "--synthetic", "--start", "2", "--end", "21", "--ledgers-per-file", "8"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert (0, f"wrote 3 files to {url} (testnet)\n") == (done.returncode, done.stderr)
    assert [] == list(tmp_path.iterdir())
    store = Datastore(url, None, None)
    assert Layout(8, 64000) == store.layout
    got = []
    for first in (0, 8, 16):
        key, data = store.fetch_file(first, 1 << 30)
        assert data is not None, key
        got += [ledger.raw for ledger in store.ledgers(key, data, 1 << 26)]
    assert [SyntheticLedgers(seed=0).ledger(s) for s in range(2, 22)] == got
    cmd = [*CDP, "datastore", "write", "s3://written-by-cdp/other", "--synthetic", "--end", "3"]
    reader = {**env, "AWS_ACCESS_KEY_ID": "reader", "AWS_SECRET_ACCESS_KEY": "reader"}
    denied = subprocess.run(cmd, cwd=tmp_path, env=reader, capture_output=True, text=True, timeout=120, check=False)
    said = "cdp: error: cannot write s3://written-by-cdp/other/.config.json: PermissionError: Access Denied.\n"
    assert (1, said) == (denied.returncode, denied.stderr)
