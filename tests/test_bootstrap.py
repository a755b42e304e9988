"""`cdp bootstrap`: the contract-data state at a checkpoint of the shared real testnet archive, against
an independent reading of its buckets (every record decoded by stellar-sdk), into Parquet and
PostgreSQL; archives that do not check out write nothing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import xdr

from .conftest import SHARED
from .helpers import CDP, ROOT
from .pg_server import PostgresServer

ARCHIVE = SHARED / "archives" / "testnet-small"
needs_archive = pytest.mark.skipif(not ARCHIVE.is_dir(), reason=f"the shared archive is not at {ARCHIVE}")
pytestmark = needs_archive


def _bucket_path(root: Path, name: str) -> Path:
    return root / "bucket" / name[0:2] / name[2:4] / name[4:6] / f"bucket-{name}.xdr.gz"


def _has(root: Path, ledger: int) -> dict[str, Any]:
    h = f"{ledger:08x}"
    return json.loads((root / "history" / h[0:2] / h[2:4] / h[4:6] / f"history-{h}.json").read_text())  # type: ignore[no-any-return]


def reference_state(root: Path, ledger: int) -> dict[str, tuple[str, int, int | None]]:
    """ledger_key_hash -> (val as base64 XDR, last-modified ledger, live_until) of every live contract-data
    entry at ``ledger``: each record decoded, newest bucket first, the first record of a key wins."""
    data: dict[bytes, xdr.LedgerEntry | None] = {}
    ttls: dict[bytes, int | None] = {}
    for level in _has(root, ledger)["currentBuckets"]:
        for name in (level["curr"], level["snap"]):
            if set(name) == {"0"}:
                continue
            raw = gzip.decompress(_bucket_path(root, name).read_bytes())
            o = 0
            while o < len(raw):
                size = int.from_bytes(raw[o : o + 4], "big") & 0x7FFFFFFF
                entry = xdr.BucketEntry.from_xdr_bytes(raw[o + 4 : o + 4 + size])
                o += 4 + size
                if entry.type == xdr.BucketEntryType.DEADENTRY:
                    key = entry.dead_entry
                    assert key is not None
                    if key.contract_data is not None:
                        data.setdefault(hashlib.sha256(key.to_xdr_bytes()).digest(), None)
                    elif key.ttl is not None:
                        ttls.setdefault(key.ttl.key_hash.hash, None)
                    continue
                live = entry.live_entry
                if live is None:
                    continue
                if live.data.contract_data is not None:
                    cd = live.data.contract_data
                    body = xdr.LedgerKeyContractData(cd.contract, cd.key, cd.durability)
                    key = xdr.LedgerKey(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=body)
                    data.setdefault(hashlib.sha256(key.to_xdr_bytes()).digest(), live)
                elif live.data.ttl is not None:
                    ttls.setdefault(live.data.ttl.key_hash.hash, live.data.ttl.live_until_ledger_seq.uint32)
    state = {}
    for key_hash, live in data.items():
        if live is None:
            continue
        cd = live.data.contract_data
        assert cd is not None
        if (
            cd.key.type == xdr.SCValType.SCV_LEDGER_KEY_NONCE
            or cd.contract.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT
        ):
            continue  # rows stellar-etl does not make
        val = base64.b64encode(cd.val.to_xdr_bytes()).decode()
        state[key_hash.hex()] = (val, live.last_modified_ledger_seq.uint32, ttls.get(key_hash))
    return state


def _cdp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CDP, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})}, check=False)  # fmt: skip


@pytest.mark.parametrize(("ledger", "live"), [(2047, 307), (8191, 3017), (10047, 4049)])
def test_the_state_at_a_checkpoint_equals_an_independent_reading(tmp_path: Path, ledger: int, live: int) -> None:
    import pyarrow.parquet as pq

    done = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", str(ledger), "--output", f"{tmp_path}/")
    assert 0 == done.returncode, done.stderr
    rows = pq.read_table(tmp_path / f"contract_data_state-{ledger:010d}.parquet").to_pylist()
    got = {r["ledger_key_hash"]: (r["val"], r["last_modified_ledger"], r["live_until_ledger_seq"]) for r in rows}
    want = reference_state(ARCHIVE, ledger)
    assert live == len(want)
    assert want == got
    assert {ledger} == {r["ledger_sequence"] for r in rows}
    assert not any(r["archived"] or r["deleted"] for r in rows)
    assert any(r["asset_code"] for r in rows)  # SAC instances carry their asset
    assert f"bootstrap done ledger={ledger} live={live} archived=0" in done.stderr


def test_into_postgres_then_refused_again_unless_replace(postgres: PostgresServer) -> None:
    import psycopg

    dsn = postgres.create_database("bootstrap")
    first = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", "8191", "--output", dsn)
    assert 0 == first.returncode, first.stderr
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT ledger_key_hash, val, last_modified_ledger, live_until_ledger_seq "
                            "FROM contract_data_current WHERE NOT archived").fetchall()  # fmt: skip
        checkpoint = conn.execute("SELECT ledger FROM cdp_checkpoint").fetchall()
        history = conn.execute("SELECT count(*) FROM contract_data_history WHERE ledger_sequence = 8191").fetchone()
        at = conn.execute("SELECT ledger_key_hash, val, last_modified_ledger, live_until_ledger_seq "
                          "FROM contract_data_at(8191)").fetchall()  # fmt: skip
    want = reference_state(ARCHIVE, 8191)
    assert want == {k: (v, m, t) for k, v, m, t in rows}
    assert want == {k: (v, m, t) for k, v, m, t in at}  # history starts with the state
    assert ([(8191,)], (3017,)) == (checkpoint, history)
    again = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", "10047", "--output", dsn)
    assert 2 == again.returncode
    assert again.stderr.splitlines()[-1].endswith(
        "public.contract_data already holds a checkpoint at ledger 8191: give --replace to write the state over it"
    )
    replaced = _cdp("bootstrap", "--archive", str(ARCHIVE), "--output", dsn, "--replace")
    assert 0 == replaced.returncode, replaced.stderr
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM contract_data_current").fetchone()
        assert [(10047,)] == conn.execute("SELECT ledger FROM cdp_checkpoint").fetchall()
    assert (4049,) == count


def _linked_copy(tmp_path: Path) -> Path:
    """The archive as links to the shared files (never copied), so a test can replace one of them."""
    copy = tmp_path / "archive"
    shutil.copytree(ARCHIVE, copy, copy_function=os.symlink)
    return copy


def test_a_corrupt_bucket_or_header_writes_nothing(tmp_path: Path) -> None:
    copy = _linked_copy(tmp_path)
    name = _has(ARCHIVE, 2047)["currentBuckets"][0]["curr"]
    bucket = _bucket_path(copy, name)
    plain = bytearray(gzip.decompress(bucket.read_bytes()))
    plain[-1] ^= 0xFF  # a byte of the last entry: still records, no longer what the name promises
    bucket.unlink()
    bucket.write_bytes(gzip.compress(bytes(plain)))
    out = tmp_path / "out"
    bad = _cdp("bootstrap", "--archive", str(copy), "--ledger", "2047", "--output", f"{out}/")
    assert 1 == bad.returncode
    assert bad.stderr.splitlines()[-1] == (
        f"cdp: error: {copy}/bucket/{name[0:2]}/{name[2:4]}/{name[4:6]}/bucket-{name}.xdr.gz: its content hashes to "
        f"{hashlib.sha256(plain).hexdigest()}, not its name"
    )
    header = copy / "ledger" / "00" / "00" / "07" / "ledger-000007ff.xdr.gz"
    entries = gzip.decompress(header.read_bytes())
    header.unlink()
    header.write_bytes(gzip.compress(entries.replace(bytes.fromhex(_list_hash(ARCHIVE, 2047)), b"\x01" * 32)))
    wrong = _cdp("bootstrap", "--archive", str(copy), "--ledger", "2047", "--output", f"{out}/")
    assert 1 == wrong.returncode
    assert (
        f"the buckets of checkpoint 2047 hash to {_list_hash(ARCHIVE, 2047)}, its header says {'01' * 32}"
        in (wrong.stderr.splitlines()[-1])
    )
    assert not out.exists()
    not_checkpoint = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", "2000", "--output", f"{out}/")
    assert (2, False) == (not_checkpoint.returncode, out.exists())
    assert "--ledger=2000: not a checkpoint ledger" in not_checkpoint.stderr
    other = _cdp("bootstrap", "--archive", str(ARCHIVE), "--network", "pubnet", "--output", f"{out}/")
    assert 2 == other.returncode
    assert other.stderr.splitlines()[-1].endswith("the archive is testnet's, not NETWORK_PASSPHRASE=pubnet")


def _list_hash(root: Path, ledger: int) -> str:
    from cdp.xdr._buckets import bucket_list_hash

    return bucket_list_hash([(b["curr"], b["snap"]) for b in _has(root, ledger)["currentBuckets"]]).hex()


def test_from_an_archive_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    """The same state from a copy of the checkpoint's files on S3 (SeaweedFS)."""
    import pyarrow.parquet as pq
    import s3fs

    from cdp.upstream._fs import start_fsspec_loop

    start_fsspec_loop()
    fs = s3fs.S3FileSystem(
        key="cdp", secret="cdp", client_kwargs={"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    )
    fs.mkdir("archive")
    has = _has(ARCHIVE, 2047)
    files = [Path("history/00/00/07/history-000007ff.json"), Path("ledger/00/00/07/ledger-000007ff.xdr.gz")]
    files += [
        _bucket_path(Path("."), n) for b in has["currentBuckets"] for n in (b["curr"], b["snap"]) if set(n) != {"0"}
    ]
    for f in files:
        fs.pipe_file(f"archive/testnet/{f}", (ARCHIVE / f).read_bytes())
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "cdp", "AWS_SECRET_ACCESS_KEY": "cdp",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    done = _cdp("bootstrap", "--archive", "s3://archive/testnet", "--ledger", "2047", "--output", f"{tmp_path}/",
                env=env)  # fmt: skip
    assert 0 == done.returncode, done.stderr
    rows = pq.read_table(tmp_path / "contract_data_state-0000002047.parquet").to_pylist()
    got = {r["ledger_key_hash"]: (r["val"], r["last_modified_ledger"], r["live_until_ledger_seq"]) for r in rows}
    assert reference_state(ARCHIVE, 2047) == got


def _current(dsn: str) -> dict[str, dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return {r["ledger_key_hash"]: r for r in conn.execute("SELECT * FROM contract_data_current")}


def test_bootstrap_then_run_equals_a_replay_from_the_start(tmp_path: Path, postgres: PostgresServer) -> None:
    """An archive of the state synthetic ledgers 2..127 leave (with a hot archive: persistent keys were
    evicted), bootstrapped at 127, then `cdp run` on to 200 with no other setting: the current table is
    the one a replay of 2..200 makes. A row untouched since the bootstrap carries the bootstrap's ledger
    and close time (the state as of it) where the replay has its last change's; an archived one has no
    TTL or eviction ledger (the hot archive keeps neither)."""
    from cdp.testing import SyntheticLedgers
    from cdp.testing._archive import write_archive

    from .helpers import fake_source_process

    counts = write_archive(tmp_path / "archive", SyntheticLedgers(seed=3), 127)
    assert counts["hot"] >= 1
    booted, replayed = postgres.create_database("booted"), postgres.create_database("replayed")
    done = _cdp("bootstrap", "--archive", str(tmp_path / "archive"), "--output", booted)
    assert 0 == done.returncode, done.stderr
    with fake_source_process("--seed", "3") as fake:
        common = ("run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--end-ledger", "200")
        on = _cdp(*common, "--output", booted)
        again = _cdp(*common, "--output", replayed, "--start-ledger", "2")
    assert (0, 0) == (on.returncode, again.returncode), on.stderr[-2000:] + again.stderr[-2000:]
    assert "service started start_ledger=128 " in on.stderr  # from the bootstrap's checkpoint, nothing given
    got, want = _current(booted), _current(replayed)
    assert sorted(want) == sorted(got)
    untouched = 0
    for key, row in got.items():
        expected = dict(want[key])
        if row["ledger_sequence"] == 127 and expected["ledger_sequence"] != 127:  # as of the bootstrap
            untouched += 1
            for name in ("ledger_sequence", "closed_at"):
                expected[name] = row[name]
        if row["archived"]:
            for name in ("live_until_ledger_seq", "archived_at_ledger"):
                expected[name] = row[name]
        assert expected == row, key
    assert untouched > 10
    assert any(r["archived"] for r in got.values())


def test_from_an_archive_over_http(tmp_path: Path) -> None:
    """As SDF's archives are read (https://history.stellar.org/...): over HTTP, from a server on 127.0.0.1."""
    import functools
    import http.server
    import threading

    import pyarrow.parquet as pq

    pytest.importorskip("aiohttp", reason="aiohttp (fsspec's HTTP backend) is not installed")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(ARCHIVE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = _cdp("bootstrap", "--archive", url, "--ledger", "2047", "--output", f"{tmp_path}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert 0 == done.returncode, done.stderr
    rows = pq.read_table(tmp_path / "contract_data_state-0000002047.parquet").to_pylist()
    got = {r["ledger_key_hash"]: (r["val"], r["last_modified_ledger"], r["live_until_ledger_seq"]) for r in rows}
    assert reference_state(ARCHIVE, 2047) == got


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal: a bar of buckets read, records, compressed bytes and an ETA; nothing otherwise."""
    import io

    from cdp._config import Config
    from cdp.batch._bootstrap import bootstrap

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, plain = Terminal(), io.StringIO()
    config = Config.from_mapping({"output": f"{tmp_path}/a/"})
    summary = bootstrap(config, str(ARCHIVE), 2047, progress=shown)
    bootstrap(Config.from_mapping({"output": f"{tmp_path}/b/"}), str(ARCHIVE), 2047, progress=plain)
    n = summary.buckets
    lines = shown.getvalue().split("\r")[1:]
    assert n == len(lines)
    assert lines[-1].startswith(f"[{'#' * 30}] buckets {n}/{n}  {summary.records:,} records  ")
    assert lines[-1].endswith("ETA 00:00\n")
    assert "" == plain.getvalue()


def test_into_an_iceberg_table_one_snapshot_per_state(tmp_path: Path) -> None:
    """The state as the table NAMESPACE.contract_data_state: the Parquet state file's rows, one snapshot per
    bootstrapped ledger (the earlier state still there by time travel), the same ledger refused again."""
    pytest.importorskip("pyiceberg_core", reason="pyiceberg-core (the iceberg extra) is not installed")
    import pyarrow.parquet as pq

    import cdp
    from cdp._config import Config

    env = {"ICEBERG_WAREHOUSE": str(tmp_path / "wh")}
    for ledger in (2047, 8191):
        done = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", str(ledger), "--output", "iceberg://lake",
                    env=env)  # fmt: skip
        assert 0 == done.returncode, done.stderr
    again = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", "8191", "--output", "iceberg://lake", env=env)
    assert (again.returncode, again.stderr.strip().splitlines()[-1]) == (
        2, "cdp: error: OUTPUT=iceberg://lake: lake.contract_data_state holds the state at ledger 8191: give "
        "--replace to write it again")  # fmt: skip
    file = _cdp("bootstrap", "--archive", str(ARCHIVE), "--ledger", "8191", "--output", f"{tmp_path}/")
    assert 0 == file.returncode, file.stderr
    want = pq.read_table(tmp_path / "contract_data_state-0000008191.parquet")
    table = cdp.lake_table(Config.load(environ={**env, "OUTPUT": "iceberg://lake"}), "contract_data_state")

    def rows(snapshot_id: int | None = None) -> list[dict[str, object]]:
        got = table.scan(snapshot_id=snapshot_id).to_arrow()
        return sorted(cdp.rows_from_arrow(got.cast(want.schema)), key=lambda r: str(r["ledger_key_hash"]))

    assert rows() == sorted(cdp.rows_from_arrow(want), key=lambda r: str(r["ledger_key_hash"]))
    states = [s for s in table.snapshots() if s.summary.operation.value != "delete"]
    assert [s.summary["cdp.state-ledger"] for s in states] == ["2047", "8191"]
    assert len(rows(states[0].snapshot_id)) == 307  # the earlier state, by time travel
