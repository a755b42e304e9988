"""Every command, driven into every kind of failure, says so in one line with the documented status.

Each cell runs the real `cdp` command against real parts (the SeaweedFS S3 server, PostgreSQL, a
loopback port nothing listens at, a name that does not resolve, a directory it may not write) and
asserts: the exit status; exactly one `cdp: error:` line, the last one, naming what failed; no
traceback or exception group; nothing left behind where the command was refused at start. Status 1
is a failure (retrying later may succeed), 2 a usage or configuration error (a setting must change).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

from cdp.extract import Ledger
from cdp.testing import SyntheticLedgers
from cdp.upstream._layout import Layout, Manifest, write_store

from .helpers import CDP, ROOT
from .pg_server import PostgresServer

NO_DNS = "nosuchhost.invalid"  # RFC 6761: never resolves


@attrs.frozen
class Cell:
    command: str
    kind: str
    args: tuple[str, ...]
    status: int
    names: str  # what the error line must name
    env: tuple[tuple[str, str], ...] = ()
    denied: bool = False  # run where file permissions bind (root: without its DAC override)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


def _denied_prefix() -> list[str] | None:
    """How to run a command that file permissions apply to: as is for a user, without the DAC
    override for root (root reads and writes anything otherwise); None where that is not possible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    s3_endpoint: str,
    postgres: PostgresServer,
) -> Iterator[dict[str, Any]]:
    import s3fs

    from cdp.upstream._fs import start_fsspec_loop

    base = tmp_path_factory.mktemp("failures")
    gen = SyntheticLedgers(seed=0)
    local = base / "store"
    write_store(
        local, Manifest(gen.passphrase, Layout(1, 64000)), [Ledger(s, None, gen.ledger(s)) for s in range(2, 10)]
    )
    start_fsspec_loop()
    fs = s3fs.S3FileSystem(
        key="cdp", secret="cdp", client_kwargs={"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    )
    fs.mkdir("failures")
    for path in local.rglob("*"):
        if path.is_file() and path.name != "FFFFFFFA--5.xdr.zst":  # ledger 5's file is a hole
            fs.pipe_file(f"failures/store/{path.relative_to(local)}", path.read_bytes())
    locked = base / "locked"
    locked.mkdir()
    (locked / "ledger.xdr").write_bytes(gen.ledger(2))
    (locked / "ledger.xdr").chmod(0o000)
    locked.chmod(0o555)  # no new file in it
    import psycopg

    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS failures")
        conn.execute("CREATE DATABASE failures")
        conn.execute("DROP ROLE IF EXISTS visitor")
        conn.execute("CREATE ROLE visitor LOGIN")  # may connect, may not create tables in public
    yield {"base": base, "local": local, "locked": locked, "s3": s3_endpoint, "pg": postgres}
    locked.chmod(0o755)


def _cells(w: dict[str, Any]) -> list[Cell]:
    """``OUT`` in a cell's arguments is an output path of its own, which the refused command must not create."""
    dead, s3, locked, local = f"127.0.0.1:{_dead_port()}", w["s3"], w["locked"], str(w["local"])
    pg: PostgresServer = w["pg"]
    no_db = pg.dsn("no_such_db")
    visitor = f"postgresql://visitor@/failures?host={pg.sock}"
    keys = (("AWS_ACCESS_KEY_ID", "cdp"), ("AWS_SECRET_ACCESS_KEY", "cdp"))
    bad_keys = (("AWS_ENDPOINT_URL", s3), ("AWS_ACCESS_KEY_ID", "stolen"), ("AWS_SECRET_ACCESS_KEY", "nope"))
    reader = (("AWS_ENDPOINT_URL", s3), ("AWS_ACCESS_KEY_ID", "reader"), ("AWS_SECRET_ACCESS_KEY", "reader"))
    on_s3 = (("AWS_ENDPOINT_URL", s3), *keys)
    s3_down = (("AWS_ENDPOINT_URL", f"http://{dead}"), *keys)
    s3_no_dns = (("AWS_ENDPOINT_URL", f"http://{NO_DNS}:8333"), *keys)
    store, nowhere = "s3://failures/store", "s3://no-such-bucket/x"
    catalog_down = (("PYICEBERG_CATALOG__DOWN__TYPE", "sql"),
                    ("PYICEBERG_CATALOG__DOWN__URI", f"postgresql+psycopg://cdp@{dead}/lake"))  # fmt: skip
    rng = ("--start-ledger", "2", "--end-ledger", "8")
    hole = "FFFFFFFA--5.xdr.zst is missing"
    no_store = f"{nowhere}: there is no store there"
    fill = ("backfill", "--datastore")
    write = ("datastore", "write")
    synthetic = ("--synthetic", "--end", "5")
    return [
        Cell("run", "network", ("run", "--source-endpoint", dead, "--end-ledger", "5"), 1, dead),
        Cell("run", "dns", ("run", "--source-endpoint", f"{NO_DNS}:50053", "--end-ledger", "5"), 1, NO_DNS),
        Cell("run", "network", ("run", "--datastore", store, *rng, "--output", "OUT"), 1, store, s3_down),
        Cell("run", "dns", ("run", "--datastore", store, *rng), 1, NO_DNS, s3_no_dns),
        Cell("run", "object-store", ("run", "--datastore", store, *rng), 1, hole, on_s3),  # not at start: rows stay
        Cell("run", "object-store", ("run", "--datastore", nowhere, *rng, "--output", "OUT"), 2, no_store, on_s3),
        Cell("run", "credential", ("run", "--datastore", store, *rng, "--output", "OUT"), 1, store, bad_keys),
        Cell("run", "permission", ("run", "--output", f"{locked}/rows.jsonl"), 1, f"{locked}/rows.jsonl", denied=True),
        Cell("run", "db", ("run", "--output", no_db, "--end-ledger", "5"), 1, "no_such_db"),
        Cell("run", "db", ("run", "--datastore", local, *rng, "--output", "iceberg://lake", "--iceberg-catalog",
                           "down"), 1, "ICEBERG_CATALOG=down: ", catalog_down),
        Cell("run", "permission", ("run", "--datastore", local, *rng, "--output", "iceberg://lake",
                                   "--iceberg-warehouse", f"{locked}/wh"), 1, f"{locked}/wh", denied=True),
        Cell("run", "credential", ("run", "--datastore", local, *rng, "--output", "s3://failures/out/"), 1,
             "OUTPUT=s3://failures/out/: ", bad_keys),
        Cell("backfill", "credential", (*fill, local, *rng, "--output", "s3://failures/fill/"), 1,
             "s3://failures/fill/contract_data-0000000002-0000000008.parquet", reader),
        Cell("run", "db-permission", ("run", "--output", visitor, "--datastore", local, *rng), 1, "permission denied"),
        Cell("extract", "network", ("extract", "--datastore", store, *rng), 1, store, s3_down),
        Cell("extract", "dns", ("extract", "--datastore", store, *rng), 1, NO_DNS, s3_no_dns),
        Cell("extract", "object-store", ("extract", "--datastore", store, *rng), 1, hole, on_s3),
        Cell("extract", "credential", ("extract", "--datastore", store, *rng), 1, store, bad_keys),
        Cell("extract", "permission", ("extract", f"{locked}/ledger.xdr"), 1, f"{locked}/ledger.xdr", denied=True),
        Cell("backfill", "network", (*fill, local, *rng, "--output", "OUT", "--scheduler", f"tcp://{dead}"), 1, dead),
        Cell("backfill", "dns", (*fill, local, *rng, "--output", "OUT", "--scheduler", f"tcp://{NO_DNS}:8786"), 1,
             NO_DNS),
        Cell("backfill", "network", (*fill, store, *rng, "--output", "OUT"), 1, store, s3_down),
        Cell("backfill", "object-store", (*fill, nowhere, "--network", "testnet", *rng, "--output", "OUT"), 2, no_store,
             on_s3),
        Cell("backfill", "credential", (*fill, store, *rng, "--output", "OUT"), 1, store, bad_keys),
        Cell("backfill", "permission", (*fill, local, *rng, "--output", f"{locked}/h"), 1, f"{locked}/h", denied=True),
        Cell("backfill", "db", (*fill, local, *rng, "--output", no_db), 1, "no_such_db"),
        Cell("datastore write", "network", (*write, "s3://failures/w", *synthetic), 1, "s3://failures/w", s3_down),
        Cell("datastore write", "dns", (*write, "s3://failures/w", *synthetic), 1, NO_DNS, s3_no_dns),
        Cell("datastore write", "object-store", (*write, store, *synthetic, "--ledgers-per-file", "4"), 2, store,
             on_s3),
        Cell("datastore write", "credential", (*write, "s3://failures/w", *synthetic), 1, "s3://failures/w", reader),
        Cell("datastore write", "permission", (*write, f"{locked}/store", *synthetic), 1, f"{locked}/store",
             denied=True),
        Cell("fake-source", "network", ("fake-source", "--host", "192.0.2.1", "--port", "0"), 2, "192.0.2.1"),
        Cell("fake-source", "dns", ("fake-source", "--host", NO_DNS, "--port", "0"), 2, NO_DNS),
        Cell("fake-source", "object-store", ("fake-source", "--port", "0", "--datastore", nowhere), 2, no_store, on_s3),
        Cell("fake-source", "credential", ("fake-source", "--port", "0", "--datastore", store), 1, store, bad_keys),
        Cell("fake-source", "permission", ("fake-source", "--port", "0", "--ledgers", f"{locked}/ledger.xdr"), 1,
             f"{locked}/ledger.xdr", denied=True),
        Cell("demo", "network", ("demo",), 2, "192.0.2.1", (("HEALTH_HOST", "192.0.2.1"),)),
        Cell("demo", "dns", ("demo",), 2, NO_DNS, (("HEALTH_HOST", NO_DNS),)),
        Cell("demo", "permission", ("demo", "--output", f"{locked}/rows.jsonl"), 1, f"{locked}/rows.jsonl",
             denied=True),
        Cell("demo", "db", ("demo", "--output", no_db), 1, "no_such_db"),
    ]  # fmt: skip


def _run(cell: Cell, cwd: Path, prefix: list[str], out: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTH_PORT": "0", "CONNECT_MAX_ATTEMPTS": "2", "BACKOFF_BASE_S": "0.05",
           "BACKOFF_CAP_S": "0.1", "DATASTORE_TIMEOUT_S": "5", "AWS_MAX_ATTEMPTS": "1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1", "SCHEDULER_TIMEOUT_S": "3",
           **dict(cell.env)}  # fmt: skip
    cmd = [*(prefix if cell.denied else []), *CDP, *(out if a == "OUT" else a for a in cell.args)]
    try:
        return subprocess.run(cmd, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # a command that should have ended: reported with the others
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
        return subprocess.CompletedProcess(cmd, -1, "", f"(still running after 60 s)\n{stderr}")


def test_every_failure_is_one_line_with_its_status(world: dict[str, Any]) -> None:
    prefix = _denied_prefix()
    cells = [c for c in _cells(world) if prefix is not None or not c.denied]
    assert len(cells) > 30 or prefix is None
    cwd = world["base"] / "cwd"
    cwd.mkdir()
    with ThreadPoolExecutor(4) as pool:
        outs = [str(world["base"] / f"out-{i}") for i in range(len(cells))]
        done = list(pool.map(lambda c, out: (c, out, _run(c, cwd, prefix or [], out)), cells, outs))
    wrong = {}
    for cell, out, proc in done:
        lines = proc.stderr.splitlines()
        errors = [line for line in lines if line.startswith("cdp: error:")]
        ok = (
            proc.returncode == cell.status
            and len(errors) == 1
            and lines[-1] == errors[0]
            and cell.names in errors[0]
            and "Traceback" not in proc.stderr
            and "Exception Group" not in proc.stderr
            and not os.path.lexists(out)  # refused: nothing made (no file, directory or lock)
        )
        if not ok:
            wrong[f"{cell.command}/{cell.kind} {' '.join(cell.args)}"] = (proc.returncode, proc.stderr[-1500:])
    assert [] == list(os.listdir(cwd))
    assert not wrong, "\n\n".join(f"{name}\n  -> {status}: {stderr}" for name, (status, stderr) in wrong.items())
