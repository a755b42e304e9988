"""The SEP-54 layout: object keys (the worked examples of datastore-layout.md), the manifest, writing a store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cdp._errors import ConfigError
from cdp.extract import Ledger
from cdp.testing import SyntheticLedgers
from cdp.upstream._layout import MANIFEST, Layout, Manifest, write_store
from cdp.xdr._files import expand_paths, read_file

from .helpers import CDP, ROOT

PUBNET = "Public Global Stellar Network ; September 2015"


@pytest.mark.parametrize(
    ("layout", "key"),
    [
        (Layout(1, 64000), "FC3E15FF--63040000-63103999/FC3D4709--63092982.xdr.zst"),
        (Layout(64, 10), "FC3D48FF--63092480-63093119/FC3D473F--63092928-63092991.xdr.zst"),
        (Layout(1, 1), "FC3D4709--63092982.xdr.zst"),
    ],
)
def test_keys_match_the_worked_examples(layout: Layout, key: str) -> None:
    assert key == layout.key(63092982)


def test_manifest_round_trip_and_checks() -> None:
    manifest = Manifest(PUBNET, Layout(1, 64000))
    assert manifest == Manifest.from_json(json.loads(json.dumps(manifest.to_json())), "store")
    manifest.check(PUBNET, None, "store")
    manifest.check(PUBNET, Layout(1, 64000), "store")
    with pytest.raises(ConfigError, match="^store: the store is for pubnet, not NETWORK_PASSPHRASE=testnet$"):
        manifest.check("Test SDF Network ; September 2015", None, "store")
    with pytest.raises(ConfigError, match="says 1 ledgers per file and 64000 files per partition, the settings say 64"):
        manifest.check(PUBNET, Layout(64, 10), "store")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([], "not a datastore manifest"),
        ({"networkPassphrase": PUBNET, "ledgersPerBatch": 1}, "manifest has no 'batchesPerPartition'"),
        ({"networkPassphrase": PUBNET, "ledgersPerBatch": 0, "batchesPerPartition": 1}, "ledgersPerBatch=0"),
        ({"networkPassphrase": PUBNET, "ledgersPerBatch": True, "batchesPerPartition": 1}, "ledgersPerBatch=True"),
        ({"networkPassphrase": PUBNET, "ledgersPerBatch": 1, "batchesPerPartition": 1, "compression": "gzip"},
         "only zstd"),
    ],
)  # fmt: skip
def test_a_bad_manifest_is_one_error_naming_the_field(data: object, why: str) -> None:
    with pytest.raises(ConfigError, match=f"^store/.config.json: .*{why}"):
        Manifest.from_json(data, "store/.config.json")


def test_a_written_store_reads_back_ledger_for_ledger(tmp_path: Path) -> None:
    gen = SyntheticLedgers(seed=2)
    ledgers = [Ledger(s, None, gen.ledger(s)) for s in range(5, 30)]
    assert 7 == write_store(tmp_path, Manifest(gen.passphrase, Layout(4, 3)), ledgers)  # 5-7, 8-11, ..., 28-29
    assert Layout(4, 3) == Manifest.from_json(json.loads((tmp_path / MANIFEST).read_text()), "x").layout
    back = [s for f in expand_paths([tmp_path]) for s in read_file(f)]
    assert [(ledger.sequence, ledger.raw) for ledger in ledgers] == sorted((s.sequence, s.raw) for s in back)
    gap = [Ledger(s, None, gen.ledger(s)) for s in (28, 30)]
    with pytest.raises(ConfigError, match="^ledgers 28 and 30 would share a file but are not consecutive"):
        write_store(tmp_path, Manifest(gen.passphrase, Layout(4, 3)), gap)
    with pytest.raises(ConfigError, match="the manifest says 4 ledgers per file"):
        write_store(tmp_path, Manifest(gen.passphrase, Layout(1, 3)), ledgers[:1])


def test_cdp_datastore_write_then_extract_equals_the_ledgers_themselves(tmp_path: Path) -> None:
    gen = SyntheticLedgers(seed=6)
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for s in range(40, 52):
        (raw_dir / f"{s}.xdr").write_bytes(gen.ledger(s))

    def cdp(*args: str) -> str:
        proc = subprocess.run([*CDP, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert 0 == proc.returncode, proc.stderr
        return proc.stdout

    cdp("datastore", "write", str(tmp_path / "store"), str(raw_dir), "--network", "testnet", "--ledgers-per-file", "8")
    cdp("datastore", "write", str(tmp_path / "synthetic"), "--synthetic", "--start", "40", "--end", "51", "--seed", "6")
    expected = cdp("extract", "--network", "testnet", "--mode", "changes", str(raw_dir))
    assert expected
    assert expected == cdp("extract", "--network", "testnet", "--mode", "changes", str(tmp_path / "store"))
    assert expected == cdp("extract", "--network", "testnet", "--mode", "changes", str(tmp_path / "synthetic"))
    inner = "".join(line + "\n" for line in expected.splitlines() if 42 <= json.loads(line)["ledger_sequence"] <= 49)
    store = str(tmp_path / "store")
    ranged = cdp("extract", "--network", "testnet", "--mode", "changes", "--datastore", store, "--start-ledger", "42",
                 "--end-ledger", "49")  # fmt: skip
    assert inner == ranged


def test_extract_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """`cdp extract ... | head` is a filter whose reader left: exit 141 as a shell reports SIGPIPE, no
    traceback, whether it reads files or a store's range."""
    store = tmp_path / "store"
    subprocess.run([*CDP, "datastore", "write", str(store), "--synthetic", "--start", "2", "--end", "200"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)  # fmt: skip
    for args in (["--datastore", str(store), "--start-ledger", "2", "--end-ledger", "200"], [str(store)]):
        with subprocess.Popen([*CDP, "extract", "--network", "testnet", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
            assert proc.stdout is not None
            assert proc.stderr is not None
            assert proc.stdout.readline().startswith("{")
            proc.stdout.close()  # the reader goes away with ~1 MB of rows still to write
            assert "" == proc.stderr.read()
        assert 141 == proc.returncode


def test_fake_source_takes_files_or_a_store_not_both(tmp_path: Path) -> None:
    proc = subprocess.run([*CDP, "fake-source", "--ledgers", str(tmp_path), "--datastore", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (2, "cdp: error: fake-source: give --ledgers or --datastore, not both\n") == (proc.returncode, proc.stderr)
