"""The datastore source against a real S3 API server (SeaweedFS on 127.0.0.1): the same rows as from the
same ledgers as raw files, a hole named by key, and standard AWS settings honoured unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

import cdp
from cdp._config import Config
from cdp._errors import UpstreamError
from cdp.extract import Ledger, Row
from cdp.testing import SyntheticLedgers
from cdp.upstream._datastore import _start_fsspec_loop
from cdp.upstream._layout import MANIFEST, Layout, Manifest, write_store

from .s3_server import s3_endpoint  # noqa: F401 - the fixture

GEN = SyntheticLedgers(seed=17)


@pytest.fixture
def s3_store(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> str:  # noqa: F811
    """A store written locally, then uploaded to its own bucket; s3fs configured only through AWS_* variables."""
    s3fs = pytest.importorskip("s3fs")
    _start_fsspec_loop()  # as cdp does: fsspec's loop must not be a trio-asyncio one
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
