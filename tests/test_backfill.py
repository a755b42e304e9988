"""`cdp backfill` on a real Dask `LocalCluster` (two worker processes on 127.0.0.1) over a local store:
the same rows as `cdp extract` and `cdp run`, idempotent reruns, redone partitions, killed workers,
bad ledgers under both policies."""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import cdp
from cdp._config import Config
from cdp._errors import BadLedgerError, CdpError, UpstreamError
from cdp.extract import Ledger, extract_rows_fast
from cdp.extract._rows import ContractDataRow, row_fields
from cdp.testing import SyntheticLedgers
from cdp.upstream._layout import Layout, Manifest, write_store

from .helpers import CDP, ROOT, WorkerKillingProcessor

pytest.importorskip("distributed", reason="the backfill extra (distributed) is not installed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from cdp.sinks._parquet import to_table  # noqa: E402 - needs pyarrow

GEN = SyntheticLedgers(seed=21)
FIRST, LAST, PER_FILE = 3, 70, 20  # partitions 3-19, 20-39, 40-59, 60-70


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_store(root, Manifest(GEN.passphrase, Layout(4, 4)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 80)])
    return root


def _config(store: Path, out: Path, **kw: Any) -> Config:
    values = {"datastore_url": str(store), "network_passphrase": GEN.passphrase, "start_ledger": FIRST,
              "end_ledger": LAST, "output": str(out), "format": "parquet", "parquet_ledgers_per_file": PER_FILE,
              "backoff_base_s": 0.01, **kw}  # fmt: skip
    return Config.from_mapping(values)


def _files(out: Path) -> dict[str, Any]:
    """Each Parquet file's table, its metadata dropped (the backfill's own is checked separately)."""
    return {p.name: pq.read_table(p).replace_schema_metadata(None) for p in sorted(out.glob("*.parquet"))}


def _expected(config: Config) -> dict[str, Any]:
    """What `cdp extract` gives for each partition's ledgers, as the Parquet sink lays it out."""
    columns = row_fields(config.mode, config.instance_extras)
    tables = {}
    for first in (FIRST, 20, 40, 60):
        last = min(LAST, (first // PER_FILE + 1) * PER_FILE - 1)
        rows = [
            r for s in range(first, last + 1) for r in extract_rows_fast(GEN.ledger(s), GEN.passphrase, config.mode)[0]
        ]
        if not config.instance_extras:
            for r in rows:
                del r["contract_instance_type"], r["contract_instance_wasm_hash"]  # type: ignore[misc]
        tables[f"contract_data-{first:010d}-{last:010d}.parquet"] = to_table(rows, "full", ContractDataRow, columns)
    return tables


@pytest.mark.parametrize("mode", ["compact", "changes"])
def test_a_backfill_equals_cdp_extract_and_cdp_run(store: Path, tmp_path: Path, mode: str) -> None:
    config = _config(store, tmp_path / "backfill", mode=mode)
    summary = cdp.backfill(config, workers=2)
    assert (4, 4, 0, LAST - FIRST + 1) == (summary.partitions, summary.written, summary.skipped, summary.ledgers)
    got = _files(tmp_path / "backfill")
    expected = _expected(config)
    assert list(expected) == list(got)
    for name, table in expected.items():
        assert table.equals(got[name]), name

    run = attrs.evolve(
        config, output=str(tmp_path / "run"), health_port=0, health_host="127.0.0.1", worker_mode="thread"
    )
    trio.run(partial(_serve, run))
    ran = _files(tmp_path / "run")
    assert list(ran) == list(got)
    for name, table in ran.items():
        assert table.equals(got[name]), name

    manifest = json.loads((tmp_path / "backfill" / "_cdp_backfill.json").read_text())
    assert [p["file"] for p in manifest["partitions"]] == list(got)
    assert manifest["rows"] == summary.rows == sum(t.num_rows for t in got.values())
    import pyarrow.dataset as ds

    assert ds.dataset(tmp_path / "backfill", format="parquet").to_table().num_rows == manifest["rows"]


async def _serve(config: Config) -> None:
    with trio.fail_after(120):
        await cdp.serve(config)


def test_a_rerun_skips_every_done_partition_and_redoes_only_what_is_missing_or_different(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = _config(store, out)
    cdp.backfill(config, workers=2)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = cdp.backfill(config, workers=2)
    assert (0, 4, 0) == (again.written, again.skipped, again.ledgers)
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}

    gone = out / "contract_data-0000000040-0000000059.parquet"
    gone.unlink()
    (out / ".contract_data-0000000060-0000000070.parquet.0123.tmp").write_bytes(b"torn")  # a task died mid-write
    redo = cdp.backfill(config, workers=2)
    assert (1, 3, 20) == (redo.written, redo.skipped, redo.ledgers)
    assert not list(out.glob(".*.tmp"))
    assert _files(out) == _expected(config)

    other = _config(store, out, instance_extras=False)
    changed = cdp.backfill(other, workers=2)
    assert (4, 0) == (changed.written, changed.skipped)
    assert _files(out) == _expected(other)
    meta = json.loads(pq.read_schema(gone).metadata[b"cdp.backfill"])
    assert (40, 59, False) == (meta["first"], meta["last"], meta["settings"]["instance_extras"])


def test_a_worker_killed_mid_partition_costs_only_a_retry(store: Path, tmp_path: Path) -> None:
    """SIGKILL (as the OOM killer would) in a worker process during two partitions: Dask reruns them
    on a fresh worker; the output is complete and exact, one file per partition."""
    markers = tmp_path / "markers"
    markers.mkdir()
    processor = WorkerKillingProcessor(str(markers), die_once=frozenset({25, 61}))
    out = tmp_path / "out"
    summary = cdp.backfill(_config(store, out), workers=2, processor=processor)
    assert (4, LAST - FIRST + 1) == (summary.written, summary.ledgers)
    assert {"25", "61"} == {p.name for p in markers.iterdir()}
    files = _files(out)
    assert {*files, "_cdp_backfill.json"} == {p.name for p in out.iterdir()}  # no temp file, no lock file left
    assert list(range(FIRST, LAST + 1)) == [s for t in files.values() for s in t.column("ledger_sequence").to_pylist()]

    always = WorkerKillingProcessor(str(markers), die_always=frozenset({45}))
    with pytest.raises(CdpError, match=r"^partition 40\.\.59: its worker died each time it was tried"):
        cdp.backfill(_config(store, tmp_path / "always"), workers=2, processor=always)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_bad_ledgers_follow_the_policy(tmp_path: Path, policy: str) -> None:
    root = tmp_path / "store"
    write_store(root, Manifest(GEN.passphrase, Layout(4, 4)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 80)])
    (root / Layout(4, 4).key(44)).write_bytes(b"\x28\xb5\x2f\xfd not zstd")  # ledgers 44-47
    out, dead = tmp_path / "out", tmp_path / "dead.jsonl"
    config = _config(root, out, on_bad_ledger=policy, dead_letter_path=str(dead))
    if policy == "stop":
        with pytest.raises(BadLedgerError, match="^ledger 44 could not be processed by contract_data: .*not a zstd"):
            cdp.backfill(config, workers=2)
        assert "contract_data-0000000040-0000000059.parquet" not in _files(out)
        for name, table in _files(out).items():  # what did finish is valid and kept
            assert _expected(config)[name].equals(table)
        return
    summary = cdp.backfill(config, workers=2)
    assert 4 == summary.dead_lettered
    assert [44, 45, 46, 47] == [json.loads(line)["ledger"] for line in dead.read_text().splitlines()]
    name = "contract_data-0000000040-0000000059.parquet"
    assert [44, 45, 46, 47] == json.loads(pq.read_schema(out / name).metadata[b"cdp.backfill"])["dead_lettered"]
    kept = _files(out)[name].column("ledger_sequence").to_pylist()
    assert kept
    assert not {44, 45, 46, 47} & set(kept)


def test_a_hole_in_the_store_fails_the_job_naming_the_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_store(root, Manifest(GEN.passphrase, Layout(4, 4)), [Ledger(s, None, GEN.ledger(s)) for s in range(2, 80)])
    (root / Layout(4, 4).key(64)).unlink()
    with pytest.raises(UpstreamError, match=r"^partition 60\.\.70: datastore .*/FFFFFFBF--64-67.xdr.zst is missing"):
        cdp.backfill(_config(root, tmp_path / "out"), workers=2)


def test_cdp_backfill_command(store: Path, tmp_path: Path) -> None:
    """The command: the dashboard address in its first line, a summary, then a rerun that does nothing."""
    out = tmp_path / "out"
    cmd = [*CDP, "backfill", "--datastore", str(store), "--start-ledger", str(FIRST), "--end-ledger", str(LAST),
           "--output", str(out), "--network", "testnet", "--parquet-ledgers-per-file", str(PER_FILE),
           "--workers", "2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stderr.splitlines()
    assert "backfill started dashboard=http://127.0.0.1:" in lines[0]
    assert "backfill done partitions=4 written=4 skipped=0 ledgers=68" in lines[-1]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert 0 == again.returncode, again.stderr
    assert "every partition is already done" in again.stderr
    assert "written=0 skipped=4" in again.stderr
    assert _files(out) == _expected(_config(store, out))


def test_an_existing_cluster_by_its_scheduler_address(store: Path, tmp_path: Path) -> None:
    """`--scheduler ADDRESS`: the job runs on a cluster it did not start, and leaves it running."""
    import logging

    from distributed import Client, LocalCluster

    from cdp._asyncio import plain_asyncio

    with (
        plain_asyncio(),
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,  # fmt: skip
    ):
        summary = cdp.backfill(_config(store, tmp_path / "out"), scheduler=cluster.scheduler_address)
        assert (4, LAST - FIRST + 1) == (summary.written, summary.ledgers)
        with Client(cluster.scheduler_address) as client:
            assert 1 == len(client.scheduler_info()["workers"])
    assert _files(tmp_path / "out") == _expected(_config(store, tmp_path / "out"))


def test_one_job_per_output_directory(store: Path, tmp_path: Path) -> None:
    """A second job (or a `cdp run`) on the same directory would delete the temp files the first is
    writing: it is refused, naming the holder."""
    from cdp._errors import ConfigError
    from cdp.pipeline._guard import exclusive

    out = tmp_path / "out"
    out.mkdir()
    with exclusive(out, "OUTPUT"), pytest.raises(ConfigError, match=r"^OUTPUT=.*out: in use by another cdp process"):
        cdp.backfill(_config(store, out), workers=1)


def test_output_faults_are_one_line(store: Path, tmp_path: Path) -> None:
    """An output under a regular file, and a full disk (a file-size limit) in the Dask workers: exit 1,
    one line naming the file and errno, no traceback (the workers' included)."""
    import resource

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = [*CDP, "backfill", "--datastore", str(store), "--start-ledger", str(FIRST), "--end-ledger", str(LAST),
            "--parquet-ledgers-per-file", str(PER_FILE), "--workers", "1"]  # fmt: skip
    under = subprocess.run([*base, "--output", str(blocker / "out")], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert 1 == under.returncode
    assert f"cdp: error: cannot write output {blocker / 'out'}: Not a directory (errno 20)\n" == under.stderr

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))  # Python ignores SIGXFSZ: writes get EFBIG

    full = subprocess.run([*base, "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_file_size)  # fmt: skip
    assert 1 == full.returncode
    assert "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("cdp: error: partition ")
    assert "cannot write " in last
    assert last.endswith(": File too large (errno 27)")


def test_verify_redoes_a_partition_damaged_inside_a_page(store: Path, tmp_path: Path) -> None:
    """A byte flipped inside a data page leaves the footer, and so the metadata, intact: a rerun trusts
    the file; `--verify` reads every page (checksummed) and redoes that partition alone."""
    out = tmp_path / "out"
    config = _config(store, out)
    assert 4 == cdp.backfill(config, workers=1).written
    victim = out / "contract_data-0000000020-0000000039.parquet"
    column = pq.ParquetFile(victim).metadata.row_group(0).column(0)
    data = bytearray(victim.read_bytes())
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    at = start + column.total_compressed_size // 2  # inside a page's data, not a header
    data[at] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert 0 == cdp.backfill(config, workers=1).written  # the metadata alone says done
    redone = cdp.backfill(config, workers=1, verify=True)
    assert (1, 3) == (redone.written, redone.skipped)
    assert _files(out) == _expected(config)


def test_the_cluster_cdp_starts_gives_a_worker_one_partition_at_a_time() -> None:
    """Dask's default saturation (1.1) queues a second task on a one-thread worker; when a partition
    kills that worker, the queued one is counted as dying with it and, after four such deaths, fails
    the run in the killer's place (seen once under load, naming partition 3..19 for 40..59)."""
    from cdp.batch._run import client_for

    with client_for(None, None, 1) as (client, _):
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == 1.0
        assert list(
            client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled")).values()
        ) == [False]
